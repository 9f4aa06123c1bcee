"""Attestation quotes of the simulated enclave, and their verification by clients.

A quote is the platform key's Ed25519 signature over (measurement, enclave public key,
caller's nonce, time). The hardware is simulated: the platform key lives in the HSM
rather than in a CPU, and quotes say `simulated: true`.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hsi.errors import HsiError

MAX_AGE_S = 60.0
# The enclave's code is the tee zone package's sources, read here as files: a client that builds from the same
# sources computes the measurement it pins (`measurement: build`) without loading any zone code.
ENCLAVE_DIR = Path(__file__).resolve().parents[2] / "zones" / "tee"
NONCE_BYTES = 32


@functools.lru_cache(maxsize=1)
def measurement() -> bytes:
    """The simulated enclave's measurement: SHA-256 over the names and contents of its source files, in order."""
    h = hashlib.sha256(b"hsi-enclave-v1\0")
    for path in sorted(ENCLAVE_DIR.glob("*.py")):
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.digest()


class AttestationError(HsiError, ValueError):
    """A quote that must not be trusted; the message says why."""


@dataclass(frozen=True)
class Quote:
    """What the enclave returns for a nonce."""

    measurement: bytes
    enclave_public_key: bytes
    nonce: bytes
    unix_time: int
    signature: bytes
    simulated: bool = True


def quote_body(measurement: bytes, enclave_public_key: bytes, nonce: bytes, unix_time: int) -> bytes:
    """The bytes the platform key signs."""
    return b"hsi-quote-v1\0" + b"\0".join([measurement, enclave_public_key, nonce, str(unix_time).encode()])


class QuoteVerifier:
    """Checks quotes against the pinned measurement and platform key; remembers nonces it has accepted."""

    def __init__(self, measurement: bytes, platform_key: bytes, max_age_s: float = MAX_AGE_S) -> None:
        self.measurement = measurement
        self.platform_key = Ed25519PublicKey.from_public_bytes(platform_key)
        self.max_age_s = max_age_s
        self._seen: set[bytes] = set()

    def verify(self, quote: Quote, nonce: bytes, now: float | None = None) -> None:
        """Accept a quote for the nonce this client just sent, or raise AttestationError naming the failure."""
        now = time.time() if now is None else now
        if quote.nonce != nonce:
            raise AttestationError("quote answers another nonce (replayed or misrouted)")
        if nonce in self._seen:
            raise AttestationError("nonce already used: replayed quote")
        try:
            self.platform_key.verify(quote.signature, quote_body(quote.measurement, quote.enclave_public_key,
                                                                  quote.nonce, quote.unix_time))
        except InvalidSignature:
            raise AttestationError("quote signature does not verify under the pinned platform key") from None
        if quote.measurement != self.measurement:
            raise AttestationError(f"enclave measurement {quote.measurement.hex()[:16]}... differs from the pinned "
                                   f"{self.measurement.hex()[:16]}...: another enclave build")
        if abs(now - quote.unix_time) > self.max_age_s:
            raise AttestationError(f"quote is {now - quote.unix_time:.0f} s old; at most {self.max_age_s:.0f} s "
                                   "allowed (stale)")
        self._seen.add(nonce)


def fingerprint(public_key: bytes) -> str:
    """Short hex fingerprint of a public key, for pinning and display."""
    return hashlib.sha256(public_key).hexdigest()[:16]
