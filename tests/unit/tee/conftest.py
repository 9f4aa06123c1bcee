"""The session's SoftHSM2 token for the enclave's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SOFTHSM_TOKENS, SoftHsm
from zones.tee.hsm import Hsm, HsmConfig

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = SOFTHSM_TOKENS["hsi-test"]


@pytest.fixture(scope="session")
def token_conf(softhsm: SoftHsm) -> Path:
    return softhsm.conf


@pytest.fixture()
def hsm(token_conf: Path) -> Iterator[Hsm]:
    h = Hsm(HsmConfig(MODULE, "hsi-test", PIN))
    yield h
    h.close()
