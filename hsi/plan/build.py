"""The planner: model graph + policy -> a Plan of stages, conversions, privacy report and cost estimate."""

from __future__ import annotations

import hashlib
import json

from hsi.calibration import CalibrationError, load_calibration
from hsi.ir import Graph
from hsi.leakage import load_leakage
from hsi.plan.masks import choose_masks
from hsi.plan.place import make_stages, place
from hsi.plan.privacy import enforce, privacy_report
from hsi.plan.routes import routes
from hsi.plan.types import Plan, PlanError, Stage
from hsi.plan.views import collusion, with_views
from hsi.policy import MpcZone, Policy


def _mpc_checks(graph: Graph, policy: Policy, stages: list[Stage]) -> dict[str, str]:
    """Refuse MPC stages whose weights the owner cannot share; the digest of each MPC zone's calibration."""
    problems, digests = [], {}
    for s in stages:
        z = policy.zones[s.zone]
        if not isinstance(z, MpcZone):
            continue
        weighted = [name for name in s.ops if graph.op(name).weights]
        if weighted and policy.model.owner not in z.parties:
            problems.append(f"MPC zone {s.zone!r} runs op {weighted[0]!r}, which needs the model's weights, but the "
                            f"model owner {policy.model.owner!r} is not one of its parties and cannot share them")
        if s.zone not in digests:
            try:
                data = load_calibration(policy.model.name, graph, z.calibration)
            except CalibrationError as e:
                problems.append(str(e))
                continue
            digests[s.zone] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    if problems:
        raise PlanError("\n".join(problems))
    return digests


def _warnings(policy: Policy) -> list[str]:
    out = []
    for name, z in policy.zones.items():
        if getattr(z, "ckks", None) is not None and z.ckks.allow_insecure:  # type: ignore[union-attr]
            out.append(f"zone {name!r}: allow_insecure is set; CKKS parameters may give less than "
                       f"{z.ckks.security}-bit security")  # type: ignore[union-attr]
        if isinstance(z, MpcZone) and z.allow_insecure_dealer:
            out.append(f"zone {name!r}: allow_insecure_dealer is set; the dealer may be a compute party")
    return out


def make_plan(graph: Graph, policy: Policy, tokens: int = 32) -> Plan:
    """The plan of running `graph` under `policy`; PlanError naming what is wrong when it cannot be run."""
    if graph.model != policy.model.name:
        raise PlanError(f"policy {policy.name!r} is for model {policy.model.name!r}, not {graph.model!r}")
    placement, placement_warnings = place(graph, policy)
    stages = make_stages(graph, policy, placement, tokens)
    conversions = routes(graph, policy, stages, tokens)
    stages, conversions = choose_masks(graph, policy, stages, conversions)
    conversions = with_views(policy, conversions)
    privacy = privacy_report(graph, policy, stages, conversions, load_leakage(policy.model.name))
    enforce(graph, policy, privacy)
    calibration = _mpc_checks(graph, policy, stages)
    return Plan(
        policy=policy.name,
        policy_digest=policy.digest(),
        model=graph.model,
        graph_digest=graph.digest(),
        client=policy.client,
        stages=stages,
        conversions=conversions,
        privacy=privacy,
        est_tokens=tokens,
        est_seconds=round(sum(s.est_seconds for s in stages), 6),
        est_bytes=sum(c.est_bytes for c in conversions),
        warnings=placement_warnings + _warnings(policy),
        calibration=calibration,
        collusion=collusion(policy, stages),
    )

