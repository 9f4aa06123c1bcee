"""Placement: each op to a zone by the first matching rule, and the ops of one zone in a row as a stage."""

from __future__ import annotations

import fnmatch

from hsi import kinds
from hsi.ir import Graph, Op, ZoneKind
from hsi.plan.types import PlanError, Stage
from hsi.policy import Policy


def place(graph: Graph, policy: Policy) -> tuple[dict[str, str], list[str]]:
    """Op name -> zone by the first matching rule, and warnings; PlanError for unplaced ops and unknown names."""
    placement: dict[str, str] = {}
    used = [False] * len(policy.placement)
    problems = []
    warnings = []
    ineligible: dict[int, list[Op]] = {}
    for op in graph.ops:
        for i, rule in enumerate(policy.placement):
            if not fnmatch.fnmatchcase(op.name, rule.match):
                continue
            if rule.types is not None and op.type not in rule.types:
                continue
            used[i] = True
            if op.type not in kinds.spec(policy.zones[rule.zone].kind).runs:
                ineligible.setdefault(i, []).append(op)
            placement[op.name] = rule.zone
            break
        else:
            problems.append(f"op {op.name!r} ({op.type.value}) matches no placement rule")
    for i, ops in ineligible.items():
        rule, op = policy.placement[i], ops[0]
        allowed = ", ".join(sorted(k.value for k in kinds.eligible_kinds(op.type)))
        more = f" (and {len(ops) - 1} more)" if len(ops) > 1 else ""
        problems.append(
            f"{policy.where('placement', i)}: rule places op {op.name!r} ({op.type.value}){more} in zone "
            f"{rule.zone!r} of kind {policy.zones[rule.zone].kind}, which cannot run it (allowed: {allowed})"
        )
    for i, rule in enumerate(policy.placement):
        if not used[i]:
            what = f"{rule.match!r}" + (f" of types {[t.value for t in rule.types]}" if rule.types else "")
            if not graph.match(rule.match):
                problems.append(f"{policy.where('placement', i, 'match')}: pattern {rule.match!r} matches no op "
                                f"of model {graph.model}")
            else:
                warnings.append(f"{policy.where('placement', i)}: rule {what} is shadowed: every op it matches is "
                                "placed by an earlier rule")
    if problems:
        raise PlanError("\n".join(problems))
    return placement, warnings


def make_stages(graph: Graph, policy: Policy, placement: dict[str, str], tokens: int) -> list[Stage]:
    groups: list[tuple[str, list[Op]]] = []
    for op in graph.ops:
        zone = placement[op.name]
        if groups and groups[-1][0] == zone:
            groups[-1][1].append(op)
        else:
            groups.append((zone, [op]))
    consumers = graph.consumers()
    stage_of = {op.name: i for i, (_, ops) in enumerate(groups) for op in ops}
    widths = {op.name: op.shape[-1] if isinstance(op.shape[-1], int) else 1 for op in graph.ops}
    stages = []
    for i, (zone, ops) in enumerate(groups):
        names = {op.name for op in ops}
        inputs = sorted({t for op in ops for t in op.inputs if t not in names},
                        key=lambda t: (stage_of.get(t, -1), t))
        outputs = [op.name for op in ops
                   if op.name in graph.outputs or any(stage_of[c] != i for c in consumers.get(op.name, []))]
        kind = ZoneKind(policy.zones[zone].kind)
        est = sum(kinds.spec(kind).op_seconds(op, int(widths.get(op.inputs[0], 1)), tokens, 0) for op in ops)
        stages.append(Stage(i, zone, kind.value, policy.zone_parties(zone), [op.name for op in ops], inputs,
                            outputs, round(est, 6)))
    return stages


