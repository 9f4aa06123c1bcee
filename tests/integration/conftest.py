"""Zones started as real processes over mTLS, once per module, on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.launcher import down, up
from orchestrator.policy import Policy, load_policy
from orchestrator.runtime import Runtime
from tests.conftest import POLICIES, policy_on_free_ports


class Deployment:
    """A running local deployment of one policy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.policy: Policy = load_policy(path)
        self.certs = Path(os.environ["HSI_CERTS_DIR"])

    def runtime(self) -> Runtime:
        return Runtime(self.policy)


def deployment(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    path = policy_on_free_ports(POLICIES / name, tmp_path_factory.mktemp("policy"))
    up(path)
    try:
        yield Deployment(path)
    finally:
        down(path)


@pytest.fixture(scope="module")
def plain_minilm(hsi_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from deployment("plain-minilm.yaml", tmp_path_factory)


@pytest.fixture(scope="module")
def plain_smollm2(hsi_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from deployment("plain-smollm2.yaml", tmp_path_factory)
