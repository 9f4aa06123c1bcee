"""`hsi certs`, `up`, `down`, `zone` and `tee`: set up and run a policy's zone processes on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from hsi.policy import load_policy
from orchestrator.cli.console import err, out


def cmd_certs_init(args: argparse.Namespace) -> int:
    """Create the dev CA and the certificates of every principal of the given policies."""
    from hsi.transport.certs import init_ca
    from orchestrator.launcher import ensure_certs

    policies = args.policy or sorted(str(p) for p in Path("deploy/policies").glob("*.yaml"))
    directory = Path(args.out)
    created = init_ca(directory)
    issued: list[str] = []
    for p in policies:
        issued += ensure_certs(load_policy(p), directory)
    err.print(f"certs in {directory}: CA {'created' if created else 'kept'}, {len(issued)} certificates issued")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start every zone of a policy locally."""
    from orchestrator.launcher import up

    pids = up(args.policy)
    for k, pid in sorted(pids.items()):
        out.print(f"{k}: pid {pid}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the zones `hsi up` started."""
    from orchestrator.launcher import down

    stopped = down(args.policy)
    out.print(f"stopped {len(stopped)} zone processes" if stopped else "nothing was running")
    return 0


def cmd_zone_serve(args: argparse.Namespace) -> int:
    """Run one zone process in the foreground (this process becomes `python -m zones serve`)."""
    from orchestrator.launcher import exec_zones

    exec_zones(["serve", "--policy", args.policy, "--zone", args.zone, "--party", args.party]
               + (["--dealer"] if args.dealer else []))


def cmd_tee_init_token(args: argparse.Namespace) -> int:
    """Create a SoftHSM2 token for a dev deployment (this process becomes `python -m zones init-token`)."""
    from orchestrator.launcher import exec_zones

    exec_zones(["init-token", "--dir", args.dir, "--label", args.label])


def add_certs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi certs init`."""
    certs = sub.add_parser("certs", help="development PKI").add_subparsers(dest="sub", required=True)
    s = certs.add_parser("init", help="create a dev CA and every principal's certificate")
    s.add_argument("--out", default=".hsi/certs")
    s.add_argument("--policy", action="append", help="policy whose principals get certificates "
                                                      "(default: deploy/policies/*.yaml)")
    s.set_defaults(func=cmd_certs_init)


def add_up_down(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi up` and `hsi down`."""
    for name, fn, helptext in (("up", cmd_up, "start every zone of a policy as local processes"),
                               ("down", cmd_down, "stop the zones `hsi up` started")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--policy", required=True)
        s.set_defaults(func=fn)


def add_zone(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi zone serve`."""
    zone = sub.add_parser("zone", help="zone processes").add_subparsers(dest="sub", required=True)
    s = zone.add_parser("serve", help="run one zone process in the foreground")
    s.add_argument("--policy", required=True)
    s.add_argument("--zone", required=True)
    s.add_argument("--party", required=True)
    s.add_argument("--dealer", action="store_true", help="run the MPC zone's dealer (Beaver triples) at this party")
    s.set_defaults(func=cmd_zone_serve)


def add_tee(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi tee init-token`."""
    tee = sub.add_parser("tee", help="simulated enclave set-up").add_subparsers(dest="sub", required=True)
    s = tee.add_parser("init-token", help="create a SoftHSM2 token for a dev deployment")
    s.add_argument("--dir", default=".hsi/softhsm")
    s.add_argument("--label", default="hsi-tee")
    s.set_defaults(func=cmd_tee_init_token)
