"""Privacy receipts: a body stating what each party received, signed over its digest; any change is caught."""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hsi.models.registry import load_graph
from hsi.plan import make_plan
from hsi.policy import load_policy
from hsi.receipts import ReceiptError, body_digest, receipt_body, signed_message, verify_receipt
from orchestrator.cli.receipt import receipts_in
from tests.conftest import POLICIES

OBSERVED = [{"zone": "he", "party": "owner", "name": "x", "encoding": "ckks", "source_party": "client",
             "source_principal": "client/embed-client", "bytes": 10},
            {"zone": "mpc", "party": "keyholder", "name": "y", "encoding": "share", "source_party": "keyholder",
             "source_principal": "keyholder/enclave", "bytes": 8},
            {"zone": "mpc", "party": "keyholder", "name": "z", "encoding": "share", "source_party": "owner",
             "source_principal": "owner/mpc", "bytes": 8}]
MEASUREMENT = bytes(range(32))


@functools.lru_cache(maxsize=1)
def _planned() -> tuple[Any, Any]:
    policy = load_policy(POLICIES / "private-minilm.yaml")
    return policy, make_plan(load_graph("minilm-l6"), policy)


def _signed(mismatches: list[str] | None = None) -> tuple[dict[str, Any], Any, Any, bytes]:
    policy, plan = _planned()
    body = receipt_body(plan, policy, "s1", OBSERVED, mismatches or [], {"embedding": [0.25, -1.0]})
    key = Ed25519PrivateKey.generate()
    signature = key.sign(signed_message(body_digest(body), MEASUREMENT, 1_800_000_000))
    receipt = {"body": body, "signature": {"measurement": MEASUREMENT.hex(), "unix_time": 1_800_000_000,
                                           "signature": signature.hex()}}
    return receipt, policy, plan, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_the_body_counts_what_each_party_received_and_a_signed_receipt_verifies() -> None:
    receipt, policy, plan, platform = _signed()
    body = receipt["body"]
    assert body["received"] == {"owner": {"he": {"ckks": 1}}, "keyholder": {"mpc": {"share": 2}}}
    assert body["plan_sha256"] == plan.digest and body["policy_sha256"] == policy.digest()
    assert body["privacy_check"] == "pass"
    verify_receipt(receipt, policy, plan, MEASUREMENT, platform)


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["body"]["received"]["keyholder"]["mpc"].update(plain=1), "does not verify"),
    (lambda r: r["body"].update(output_sha256="0" * 64), "does not verify"),
    (lambda r: r["signature"].update(unix_time=1), "does not verify"),
    (lambda r: r["signature"].update(signature="00" * 64), "does not verify"),
    (lambda r: r.pop("signature"), "not a receipt"),
])
def test_any_change_to_a_receipt_is_caught(change: Any, message: str) -> None:
    receipt, policy, plan, platform = _signed()
    bad = copy.deepcopy(receipt)
    change(bad)
    with pytest.raises(ReceiptError, match=message):
        verify_receipt(bad, policy, plan, MEASUREMENT, platform)


def test_another_enclave_build_policy_or_a_failed_check_is_refused() -> None:
    receipt, policy, plan, platform = _signed()
    with pytest.raises(ReceiptError, match="enclave measurement"):
        verify_receipt(receipt, policy, plan, bytes(32), platform)
    other = load_policy(POLICIES / "private-smollm2.yaml")
    with pytest.raises(ReceiptError, match="policy"):
        verify_receipt(receipt, other, plan, MEASUREMENT, platform)
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(receipt, policy, plan, MEASUREMENT, Ed25519PrivateKey.generate().public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw))
    failed, policy, plan, platform = _signed(["owner received 'x' as plain, which the privacy report does not list"])
    with pytest.raises(ReceiptError, match="privacy check failed"):
        verify_receipt(failed, policy, plan, MEASUREMENT, platform)


def test_receipts_are_found_in_cli_output_http_responses_or_alone() -> None:
    receipt, *_ = _signed()
    assert receipts_in({"output": {}, "receipt": receipt}) == [receipt]
    assert receipts_in({"data": [], "hsi_receipt": [receipt, receipt]}) == [receipt, receipt]
    assert receipts_in(receipt) == [receipt]
    with pytest.raises(Exception, match="no receipt in the file"):
        receipts_in({"output": {}})
