"""`hsi`: plan, run and operate hybrid secure inference from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from hsi.errors import HsiError
from orchestrator.cli import deploy, keys, leakage, plan, processes, receipt, run, tools

# the command groups in the order `hsi --help` lists them
_GROUPS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    plan.add_plan, plan.add_policy, processes.add_certs, processes.add_up_down, run.add_run, processes.add_zone,
    keys.add_keys, keys.add_audit, processes.add_tee, deploy.add_deploy, tools.add_calibrate, tools.add_bench,
    tools.add_serve, leakage.add_leakage, receipt.add_receipt,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `hsi`."""
    ap = argparse.ArgumentParser(prog="hsi", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    for add in _GROUPS:
        add(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hsi` console script: run one command; an HsiError prints `error: ...` and its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except HsiError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
