"""The HSM keeps its keys inside the token; a wrong PIN or token is named."""

from __future__ import annotations

import pytest

from tests.support.hsm import MODULE, TOKENS, SoftHsm
from zones.tee.hsm import Hsm, HsmConfig, HsmError, SealError

PIN = TOKENS["hsi-test"]



def test_hsm_keys_stay_inside(hsm: Hsm) -> None:
    assert hsm.kek_extractable is False
    blob = hsm.seal(b"secret key bytes", b"aad")
    assert hsm.unseal(blob, b"aad") == b"secret key bytes"
    with pytest.raises(SealError, match="sealed for another key id or enclave measurement"):
        hsm.unseal(blob, b"other aad")
    flipped = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
    with pytest.raises(SealError, match="authentication failed"):
        hsm.unseal(flipped, b"aad")


def test_wrong_pin_or_token(softhsm: SoftHsm) -> None:
    with pytest.raises(HsmError, match="cannot open PKCS#11 token 'hsi-test'"):
        Hsm(HsmConfig(MODULE, "hsi-test", "wrong"))
    with pytest.raises(HsmError, match="cannot open PKCS#11 token 'nope'"):
        Hsm(HsmConfig(MODULE, "nope", softhsm.pins["hsi-test"]))
