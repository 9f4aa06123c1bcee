"""A zone that dies mid-deployment: the run fails naming it, other zones keep serving, a restart recovers."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from orchestrator.launcher import running, state_dir, up
from orchestrator.runtime import RunError
from tests.integration.conftest import Deployment


def test_killed_zone_fails_run_and_restart_recovers(plain_minilm: Deployment) -> None:
    pids = running(plain_minilm.policy)
    assert pids is not None
    os.kill(pids["plain-owner@owner"], signal.SIGKILL)
    time.sleep(0.5)
    rt = plain_minilm.runtime()
    start = time.monotonic()
    try:
        with pytest.raises(RunError, match="zone 'plain-owner'") as e:
            rt.embed("the owner is gone")
        assert "UNAVAILABLE" in str(e.value)
    finally:
        rt.close()
    assert time.monotonic() - start < plain_minilm.policy.transport.deadlines.rpc_s
    assert running(plain_minilm.policy) is None
    new = up(plain_minilm.path)  # restarts only the dead zone
    assert new["embed-client@client"] == pids["embed-client@client"]
    assert new["plain-owner@owner"] != pids["plain-owner@owner"]
    state = json.loads((state_dir() / f"{plain_minilm.policy.name}.json").read_text())
    assert state["pids"] == new
    rt = plain_minilm.runtime()
    try:
        assert len(rt.embed("back in service").output["embedding"]) == 384
    finally:
        rt.close()
