"""`python -m zones`: run one zone process, or make a dev HSM token for an enclave (the data plane's commands)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from hsi.policy import HsmSettings, PolicyError, load_policy


def _serve(args: argparse.Namespace) -> int:
    from zones.serve import serve_zone

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not serve_zone(load_policy(args.policy), args.zone, args.party, dealer=args.dealer):
        logging.shutdown()
        os._exit(1)  # a handler thread still in an RPC would hold the interpreter's exit (the executor joins it)
    return 0


def _init_token(args: argparse.Namespace) -> int:
    from zones.tee.hsm import HsmError, init_dev_token

    try:
        conf, pin_file, public = init_dev_token(Path(args.dir), args.label, HsmSettings().module)
    except HsmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"SoftHSM2 token {args.label!r} ready: SOFTHSM2_CONF={conf}, PIN in {pin_file}, platform key in {public}",
          file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m zones` (also reached as `hsi zone serve` and `hsi tee init-token`)."""
    ap = argparse.ArgumentParser(prog="python -m zones", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run one zone process in the foreground until SIGTERM/SIGINT")
    s.add_argument("--policy", required=True)
    s.add_argument("--zone", required=True)
    s.add_argument("--party", required=True)
    s.add_argument("--dealer", action="store_true", help="run the MPC zone's dealer (Beaver triples) at this party")
    s.set_defaults(func=_serve)
    s = sub.add_parser("init-token", help="create a SoftHSM2 token for a dev deployment's enclave")
    s.add_argument("--dir", default=".hsi/softhsm")
    s.add_argument("--label", default="hsi-tee")
    s.set_defaults(func=_init_token)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m zones`."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
