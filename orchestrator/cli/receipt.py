"""`hsi receipt verify`: check a run's signed privacy receipt against the policy's pinned enclave and its plan."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hsi.errors import HsiError
from orchestrator.cli.console import out


def receipts_in(doc: Any) -> list[dict[str, Any]]:
    """The receipts of a document: `hsi embed/generate --json` output, an HTTP response (`hsi_receipt`), or one
    receipt."""
    if isinstance(doc, dict) and "receipt" in doc:
        doc = doc["receipt"]
    elif isinstance(doc, dict) and "hsi_receipt" in doc:
        doc = doc["hsi_receipt"]
    found = doc if isinstance(doc, list) else [doc]
    if not found or not all(isinstance(r, dict) and "body" in r for r in found):
        raise HsiError("no receipt in the file: expected `hsi embed/generate --json` output, an HTTP response "
                       "with hsi_receipt, or a receipt {body, signature}")
    return found


def cmd_receipt_verify(args: argparse.Namespace) -> int:
    """Verify every receipt of a file; an HsiError (exit 2) naming the first that does not verify."""
    from hsi.models.registry import load_graph
    from hsi.plan import make_plan
    from hsi.policy import load_policy
    from hsi.receipts import verify_receipt
    from hsi.transport.keyclient import pinned
    from orchestrator.runtime.receipt import signing_enclave

    try:
        doc = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as e:
        raise HsiError(f"{args.file}: not a JSON file ({e})") from None
    policy = load_policy(args.policy)
    plan = make_plan(load_graph(policy.model.name), policy)  # as the runtime plans it
    zone = signing_enclave(policy)
    if zone is None:
        raise HsiError(f"policy {policy.name!r} grants no enclave sign_receipt for the runtime: nothing to verify "
                       "against")
    measurement, platform = pinned(policy.zones[zone], zone)  # type: ignore[arg-type]
    for i, receipt in enumerate(receipts_in(doc)):
        if receipt.get("signature") is None:
            raise HsiError(f"receipt {i} is not signed: {receipt.get('unsigned')}")
        verify_receipt(receipt, policy, plan, measurement, platform)
        b, s = receipt["body"], receipt["signature"]
        out.print(f"receipt {i}: verified: session {b['session'][:12]}, policy {b['policy']} "
                  f"({b['policy_sha256'][:12]}), plan {b['plan_sha256'][:12]}, privacy check {b['privacy_check']}; "
                  f"signed by {s['enclave']} (a simulated enclave) at {s['unix_time']}")
    return 0


def add_receipt(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hsi receipt verify`."""
    r = sub.add_parser("receipt", help="privacy receipts").add_subparsers(dest="sub", required=True)
    v = r.add_parser("verify", help="check a run's signed privacy receipt against the policy's pinned enclave")
    v.add_argument("file", help="`hsi embed/generate --json` output, an HTTP response, or one receipt")
    v.add_argument("--policy", required=True)
    v.set_defaults(func=cmd_receipt_verify)
