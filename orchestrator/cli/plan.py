"""`hsi plan` and `hsi policy`: show a policy's plan as tables or JSON, print the policy schema, check a policy."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from hsi.plan import Conversion, Plan
from hsi.policy import policy_json_schema
from orchestrator.cli.console import out


def _plan_tables(plan: Plan) -> None:
    t = Table(title=f"plan of {plan.policy} ({plan.model}), estimated for {plan.est_tokens} tokens")
    for col in ("stage", "zone", "kind", "parties", "ops", "first op", "last op", "est s"):
        t.add_column(col)
    for s in plan.stages:
        t.add_row(str(s.index), s.zone, s.kind, ",".join(s.parties), str(len(s.ops)), s.ops[0], s.ops[-1],
                  f"{s.est_seconds:.3f}")
    out.print(t)
    c = Table(title="conversions (every tensor: `hsi plan --json`)")
    for col in ("from", "to", "kind", "tensors", "est bytes", "mask hides (bits, min)", "error budget (max)", "how"):
        c.add_column(col)
    groups: dict[tuple[str, str, str], list[Conversion]] = {}
    for conv in plan.conversions:
        groups.setdefault((conv.from_zone, conv.to_zone, conv.kind), []).append(conv)
    for (src, dst, kind), convs in groups.items():
        hiding = [x.hiding_bits for x in convs if x.hiding_bits is not None]
        budget = [x.error_budget for x in convs if x.error_budget is not None]
        c.add_row(src, dst, kind, str(len(convs)), f"{sum(x.est_bytes for x in convs):,}",
                  f"{min(hiding):.1f}" if hiding else "-", f"{max(budget):.2g}" if budget else "-", convs[0].how)
    out.print(c)
    out.print(_receives(groups))
    p = Table(title="privacy report: what each party sees")
    for col in ("party", "plaintext activations", "token recovery", "plaintext weights", "ciphertexts", "shares"):
        p.add_column(col)
    for party, v in plan.privacy.items():
        recovery = "-" if v.token_recovery is None else f"{v.token_recovery:.0%}"
        p.add_row(party, _summary(v.activations), recovery, _summary(v.weights), _summary(v.ciphertexts),
                  _summary(v.shares))
    out.print(p)
    for party, v in plan.privacy.items():
        if v.recovered_from:
            out.print(f"{party}: {v.token_recovery:.0%} of the input tokens recovered from {v.recovered_from}")
    for pair in plan.collusion:
        out.print(f"must not collude: {' + '.join(pair.pair)}: together they learn {pair.learns}")
    out.print(f"estimated total: {plan.est_seconds:.3f} s, {plan.est_bytes:,} bytes between zones")
    for w in plan.warnings:
        out.print(f"[bold red]warning:[/] {w}")


def _receives(groups: dict[tuple[str, str, str], list[Conversion]]) -> Table:
    """Per conversion kind and zone pair: what each process receives of its weakest-hidden tensor."""
    t = Table(title="what each process receives of each conversion")
    for col in ("from", "to", "kind", "process", "receives", "hiding (weakest tensor)"):
        t.add_column(col)
    for (src, dst, kind), convs in groups.items():
        weakest = min(convs, key=lambda x: x.hiding_bits if x.hiding_bits is not None else float("inf"))
        for principal, seen in weakest.sees.items():
            t.add_row(src, dst, kind, principal, seen.what, seen.hiding)
    return t


def _summary(names: list[str], show: int = 3) -> str:
    if not names:
        return "-"
    head = ", ".join(names[:show])
    return f"{len(names)}: {head}" + (", ..." if len(names) > show else "")


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the plan of a policy."""
    from orchestrator import api

    plan = api.plan(args.policy, tokens=args.tokens)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        _plan_tables(plan)
    return 0


def cmd_policy_schema(args: argparse.Namespace) -> int:
    """Print the policy JSON Schema."""
    print(json.dumps(policy_json_schema(), indent=2))
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate a policy file (and plan it against its model)."""
    from orchestrator import api

    api.plan(args.policy)
    out.print(f"{args.policy}: ok")
    return 0


def add_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi plan`."""
    p = sub.add_parser("plan", help="show which zone runs each op, conversions, privacy report, cost")
    p.add_argument("--policy", required=True)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--tokens", type=int, default=32, help="token count the cost estimate assumes")
    p.set_defaults(func=cmd_plan)


def add_policy(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi policy schema|check`."""
    pol = sub.add_parser("policy", help="policy schema and validation").add_subparsers(dest="sub", required=True)
    s = pol.add_parser("schema", help="print the policy JSON Schema")
    s.set_defaults(func=cmd_policy_schema)
    s = pol.add_parser("check", help="validate a policy and plan it")
    s.add_argument("policy")
    s.set_defaults(func=cmd_policy_check)
