"""A fresh SoftHSM2 token per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from zones.tee.hsm import Hsm, HsmConfig, init_softhsm_token

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "1234-test"


@pytest.fixture(scope="session")
def token_conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    conf = init_softhsm_token(tmp_path_factory.mktemp("softhsm"), "hsi-test", PIN, "5678-so")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return conf


@pytest.fixture()
def hsm(token_conf: Path) -> Iterator[Hsm]:
    h = Hsm(HsmConfig(MODULE, "hsi-test", PIN))
    yield h
    h.close()
