"""A zone that dies mid-deployment, or cannot start: the run fails naming it, other zones keep serving, a restart
recovers."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from hsi.policy import load_policy
from orchestrator.launcher import LaunchError, down, running, state_dir, up
from orchestrator.runtime import RunError
from tests.conftest import POLICIES, policy_on_free_ports
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


@pytest.mark.slow  # 28 s
def test_a_zone_that_cannot_start_leaves_the_healthy_ones_up(hsi_env: Path, tmp_path: Path) -> None:
    # a name of its own: the module's plain-minilm deployment keeps its state file
    path = policy_on_free_ports(POLICIES / "plain-minilm.yaml", tmp_path, name="plain-minilm-squatted")
    policy = load_policy(path)
    host, port = policy.zone_endpoints("plain-owner")["owner"].rsplit(":", 1)
    squatter = socket.socket()
    squatter.bind((host, int(port)))  # the owner's zone cannot bind its port
    squatter.listen()
    try:
        with pytest.raises(LaunchError, match="plain-owner@owner"):
            up(path, timeout=60)
        state = json.loads((state_dir() / f"{policy.name}.json").read_text())
        assert set(state["pids"]) == {"embed-client@client"}  # still up, and recorded for `hsi down`
        healthy = state["pids"]["embed-client@client"]
        os.kill(healthy, 0)
        assert running(policy) is None  # not the whole policy
    finally:
        squatter.close()
    try:
        pids = up(path)  # starts only the zone that was missing
        assert pids["embed-client@client"] == healthy
    finally:
        assert sorted(down(path)) == ["embed-client@client", "plain-owner@owner"]
