"""The runtime's side of privacy receipts: the body of a run's receipt, signed by the policy's attested enclave."""

from __future__ import annotations

import threading
from typing import Any

from hsi.plan import Plan
from hsi.policy import Policy, TeeZone
from hsi.receipts import SIMULATED, body_digest, receipt_body
from hsi.transport.attestation import AttestationError, fingerprint
from hsi.transport.keyclient import KeyClient, KeyServiceError


def signing_enclave(policy: Policy) -> str | None:
    """The tee zone that signs the runtime's receipts: the first whose grants give the runtime `sign_receipt`."""
    granted = any(g.principal == policy.runtime_principal and "sign_receipt" in g.operations for g in policy.keys)
    tees = list(policy.zones_of(TeeZone))
    return tees[0] if granted and tees else None


class ReceiptSigner:
    """Signs each run's receipt in the policy's enclave (attested once, on first use)."""

    def __init__(self, policy: Policy, plan: Plan) -> None:
        self.policy, self.plan = policy, plan
        self.zone = signing_enclave(policy)
        self._client: KeyClient | None = None
        self._lock = threading.Lock()

    def sign(self, session: str, privacy: dict[str, Any], output: Any) -> dict[str, Any]:
        """The run's receipt: its body and the enclave's signature, or why there is none."""
        body = receipt_body(self.plan, self.policy, session, privacy["observed"], privacy["mismatches"], output)
        if self.zone is None:
            return {"body": body, "signature": None,
                    "unsigned": "no tee zone grants the runtime sign_receipt in this policy"}
        try:
            with self._lock:
                if self._client is None:
                    self._client = KeyClient(self.policy, self.zone, self.policy.runtime_principal)
                r = self._client.sign_receipt(session, body_digest(body))
                platform = self._client.platform_key
        except (KeyServiceError, AttestationError) as e:
            return {"body": body, "signature": None, "unsigned": f"tee zone {self.zone!r}: {e}"}
        return {"body": body, "signature": {
            "enclave": f"{self.zone} at {self.policy.zones[self.zone].party}",  # type: ignore[union-attr]
            "measurement": bytes(r.measurement).hex(), "unix_time": r.unix_time,
            "signature": bytes(r.signature).hex(), "platform_key_sha256": fingerprint(platform),
            "simulated": r.simulated, "note": SIMULATED}}

    def close(self) -> None:
        """Close the key service channel."""
        if self._client is not None:
            self._client.close()
