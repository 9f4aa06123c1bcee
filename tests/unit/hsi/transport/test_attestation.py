"""Quotes of the simulated enclave verify only against the pinned measurement and platform key, fresh."""

from __future__ import annotations

import time

import pytest

from hsi.transport.attestation import AttestationError, Quote, QuoteVerifier, measurement, quote_body
from zones.tee.hsm import Hsm


def _quote(hsm: Hsm, nonce: bytes, meas: bytes, when: int) -> Quote:
    pub = b"\x07" * 32
    return Quote(meas, pub, nonce, when, hsm.sign(quote_body(meas, pub, nonce, when)))


def test_attestation(hsm: Hsm) -> None:
    now = int(time.time())
    verifier = QuoteVerifier(measurement(), hsm.platform_public_key())
    nonce = b"n" * 32
    good = _quote(hsm, nonce, measurement(), now)
    verifier.verify(good, nonce)
    with pytest.raises(AttestationError, match="replayed"):
        verifier.verify(good, nonce)
    with pytest.raises(AttestationError, match="another nonce"):
        verifier.verify(_quote(hsm, b"m" * 32, measurement(), now), b"o" * 32)
    with pytest.raises(AttestationError, match="differs from the pinned"):
        verifier.verify(_quote(hsm, b"p" * 32, b"\x00" * 32, now), b"p" * 32)
    forged = Quote(measurement(), b"\x07" * 32, b"q" * 32, now, b"\x00" * 64)
    with pytest.raises(AttestationError, match="signature does not verify"):
        verifier.verify(forged, b"q" * 32)
    with pytest.raises(AttestationError, match="stale"):
        verifier.verify(_quote(hsm, b"r" * 32, measurement(), now - 3600), b"r" * 32)
