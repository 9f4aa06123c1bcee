"""The simulated enclave: HSM, key store, access control and audit log, behind the KeyService RPCs."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hsi.policy import Policy, TeeZone
from hsi.receipts import signed_message
from hsi.transport.attestation import Quote, measurement, quote_body
from zones.tee.access import AccessControl
from zones.tee.audit import AuditLog
from zones.tee.hsm import Hsm, HsmConfig, HsmError
from zones.tee.keystore import KeyStore


def hsm_config(zone: TeeZone) -> HsmConfig:
    """The HSM settings of a tee zone, with the PIN from its environment variable or file."""
    pin = os.environ.get(zone.hsm.pin_env)
    if pin is None and zone.hsm.pin_file:
        try:
            pin = Path(zone.hsm.pin_file).read_text().strip()
        except OSError as e:
            raise HsmError(f"cannot read HSM PIN file {zone.hsm.pin_file}: {e.strerror}") from None
    if pin is None:
        raise HsmError(f"no HSM PIN: set {zone.hsm.pin_env} or hsm.pin_file in the policy")
    if zone.hsm.softhsm_conf:
        os.environ["SOFTHSM2_CONF"] = zone.hsm.softhsm_conf
    return HsmConfig(zone.hsm.module, zone.hsm.token_label, pin)


class Enclave:
    """Everything that runs inside the (simulated) enclave boundary."""

    def __init__(self, policy: Policy, zone: str) -> None:
        z = policy.zones[zone]
        assert isinstance(z, TeeZone)
        self.zone = z
        self.measurement = measurement()
        self.hsm = Hsm(hsm_config(z))
        self.audit = AuditLog(Path(z.audit_log))
        self.access = AccessControl(list(policy.keys), self.audit)
        self.keys = KeyStore(self.hsm, Path(z.key_dir), self.measurement)
        # The enclave's own identity key, fresh each start; bound to the measurement by the quote.
        self._identity = Ed25519PrivateKey.generate()
        self.public_key = self._identity.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def quote(self, nonce: bytes) -> Quote:
        """An attestation quote for the caller's nonce, signed by the platform key in the HSM."""
        now = int(time.time())
        sig = self.hsm.sign(quote_body(self.measurement, self.public_key, nonce, now))
        return Quote(self.measurement, self.public_key, nonce, now, sig)

    def sign_receipt(self, digest: bytes) -> tuple[bytes, int, bytes]:
        """(measurement, time, the platform key's signature) over a privacy receipt's digest."""
        now = int(time.time())
        return self.measurement, now, self.hsm.sign(signed_message(digest, self.measurement, now))

    def close(self) -> None:
        """Stop the key store's background work and close the HSM session."""
        self.keys.close()
        self.hsm.close()
