"""`hsi keys` and `hsi audit`: operate a tee zone's key service, and verify or show its audit log."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hsi.policy import HeZone, Policy, TeeZone, load_policy
from orchestrator.cli.console import out


def _tee_zone(policy: Policy, zone: str | None) -> str:
    tees = list(policy.zones_of(TeeZone))
    if zone:
        return zone
    if len(tees) != 1:
        raise SystemExit(f"policy has tee zones {tees}; name one with --zone")
    return tees[0]


def cmd_keys(args: argparse.Namespace) -> int:
    """Key-service operations against a policy's tee zone."""
    from hsi.transport.keyclient import KeyClient

    policy = load_policy(args.policy)
    zone = _tee_zone(policy, args.zone)
    tee = policy.zones[zone]
    assert isinstance(tee, TeeZone)
    principal = args.principal or f"{tee.party}/admin"
    client = KeyClient(policy, zone, principal)
    try:
        if args.sub == "attest":
            q = client.attest(pin=not args.no_verify)
            out.print(f"measurement:  {q.measurement.hex()}\nplatform_key: {client.platform_key.hex()}\n"
                      f"enclave key:  {q.enclave_public_key.hex()}\nsimulated:    {q.simulated}\n"
                      + ("quote verified against the policy's pins" if not args.no_verify else
                         "NOT verified (--no-verify): pin these values in the policy after checking them"))
        elif args.sub == "create":
            he = next((h for h in policy.zones.values() if isinstance(h, HeZone) and h.key == args.key), None)
            ckks = he.ckks if he else None
            r = client.create(args.key, args.ring_dim or (ckks.ring_dim if ckks else 16384),
                              ckks.scale_bits if ckks else 35, ckks.first_mod_bits if ckks else 60,
                              ckks.depth if ckks else 1)
            out.print(f"created key {r.key} in {zone} ({tee.party}); public key sha256 {r.public_key_sha256.hex()}")
        elif args.sub == "list":
            for k in client.list():
                out.print(f"{k.key} v{k.version} {'destroyed' if k.destroyed else 'active'} {k.params_json} "
                          f"pk {k.public_key_sha256[:16]}")
        elif args.sub in ("rotate", "destroy"):
            k = getattr(client, args.sub)(args.key)
            out.print(f"{args.sub}: {k.key} now v{k.version}{' (destroyed)' if k.destroyed else ''}")
    finally:
        client.close()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Verify or show a key-service audit log file."""
    from hsi.audit import read_log, verify_records

    try:  # a missing file, a line that is not a record or a torn last line: the log is not intact
        records = read_log(Path(args.log))
    except ValueError as e:
        print(f"audit: {e}", file=sys.stderr)
        return 1
    if args.sub == "show":
        for r in records:  # fields come from callers: no markup, no highlighting
            out.print(f"{r.index:5d} {r.time:.3f} {r.decision:5s} {r.principal} {r.operation} {r.key} "
                      f"{r.session} {r.reason}", highlight=False, markup=False)
        return 0
    problems = verify_records(records)
    if problems:
        for p in problems:
            print(f"audit: {p}", file=sys.stderr)
        return 1
    out.print(f"{args.log}: {len(records)} records, chain intact")
    return 0


def add_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi keys attest|create|list|rotate|destroy`."""
    keys = sub.add_parser("keys", help="key service of a tee zone").add_subparsers(dest="sub", required=True)
    for name, helptext in (("attest", "fetch and verify an attestation quote"), ("create", "create a CKKS key"),
                           ("list", "list keys"), ("rotate", "rotate a key"), ("destroy", "destroy a key")):
        s = keys.add_parser(name, help=helptext)
        s.add_argument("--policy", required=True)
        s.add_argument("--zone", help="tee zone (default: the policy's only one)")
        s.add_argument("--principal", help="principal whose certificate to use (default: <tee party>/admin)")
        if name in ("create", "rotate", "destroy"):
            s.add_argument("--key", required=True)
        if name == "create":
            s.add_argument("--ring-dim", type=int)
        if name == "attest":
            s.add_argument("--no-verify", action="store_true", help="print the quote without checking the pins")
        s.set_defaults(func=cmd_keys)


def add_audit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi audit verify|show`."""
    audit = sub.add_parser("audit", help="key-service audit log").add_subparsers(dest="sub", required=True)
    for name in ("verify", "show"):
        s = audit.add_parser(name, help=f"{name} a hash-chained audit log")
        s.add_argument("--log", required=True)
        s.set_defaults(func=cmd_audit)
