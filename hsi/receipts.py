"""Privacy receipts: what a run's zones received, against the plan, signed by the enclave's platform key."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hsi.errors import HsiError
from hsi.plan import Plan
from hsi.policy import Policy

VERSION = 1
SIMULATED = ("The enclave that signed this receipt is simulated: its platform key is a SoftHSM key of the party "
             "running it, so the signature proves which deployment and enclave build produced the receipt, not "
             "that hardware isolated the enclave.")


class ReceiptError(HsiError, ValueError):
    """A receipt that does not verify; the message says what differs."""


def receipt_body(plan: Plan, policy: Policy, session: str, observed: list[dict[str, Any]], mismatches: list[str],
                 output: Any) -> dict[str, Any]:
    """What a receipt states: the plan and policy run, and per party and zone what it received, by encoding."""
    received: dict[str, dict[str, dict[str, int]]] = {}
    counts = Counter((r["party"], r["zone"], r["encoding"]) for r in observed)
    for (party, zone, encoding), n in sorted(counts.items()):
        received.setdefault(party, {}).setdefault(zone, {})[encoding] = n
    return {"version": VERSION, "session": session, "policy": policy.name, "policy_sha256": policy.digest(),
            "plan_sha256": plan.digest, "model": plan.model, "graph_sha256": plan.graph_digest,
            "output_sha256": hashlib.sha256(canonical(output)).hexdigest(), "received": received,
            "privacy_check": "pass" if not mismatches else "fail", "mismatches": mismatches}


def canonical(value: Any) -> bytes:
    """The canonical JSON bytes of `value` (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def body_digest(body: dict[str, Any]) -> bytes:
    """SHA-256 of a receipt body's canonical JSON."""
    return hashlib.sha256(canonical(body)).digest()


def signed_message(digest: bytes, measurement: bytes, unix_time: int) -> bytes:
    """The bytes the platform key signs for a receipt."""
    return b"hsi-receipt-v1\0" + b"\0".join([digest, measurement, str(unix_time).encode()])


def verify_receipt(receipt: dict[str, Any], policy: Policy, plan: Plan, measurement: bytes,
                   platform_key: bytes) -> None:
    """Raise ReceiptError unless `receipt` is signed by the pinned platform key over its body, by the pinned
    enclave build, for this policy and its plan, with the privacy check passed."""
    try:
        body, sig = receipt["body"], receipt["signature"]
        signed = bytes.fromhex(sig["signature"])
        got_measurement, unix_time = bytes.fromhex(sig["measurement"]), int(sig["unix_time"])
    except (KeyError, TypeError, ValueError) as e:
        raise ReceiptError(f"not a receipt: {type(e).__name__}: {e}") from None
    try:
        Ed25519PublicKey.from_public_bytes(platform_key).verify(
            signed, signed_message(body_digest(body), got_measurement, unix_time))
    except InvalidSignature:
        raise ReceiptError("the signature does not verify under the pinned platform key: the receipt was changed "
                           "or signed by another platform") from None
    checks = [("enclave measurement", got_measurement.hex(), measurement.hex()),
              ("policy", body.get("policy_sha256"), policy.digest()),
              ("plan", body.get("plan_sha256"), plan.digest)]
    for what, got, want in checks:
        if got != want:
            raise ReceiptError(f"the receipt's {what} is {str(got)[:16]}..., the pinned one {want[:16]}...")
    if body.get("privacy_check") != "pass":
        raise ReceiptError(f"the run's privacy check failed: {body.get('mismatches')}")
