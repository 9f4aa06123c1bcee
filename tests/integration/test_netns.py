"""Parties as separate hosts: one network namespace each, zones started from their bundles, LAN profile."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from orchestrator.netns import netns_deployment
from orchestrator.policy import load_policy
from orchestrator.reference import reference_embedding
from tests.conftest import POLICIES

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root (CI runs as root)")
TEXT = "Separate hosts, one policy."


def _reachable(ns: str, address: str, port: int) -> bool:
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=2).close()"
    return subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", probe], capture_output=True).returncode == 0


def test_plain_minilm_across_namespaces_equals_loopback(hsi_env: Path, tmp_path: Path) -> None:
    with netns_deployment(POLICIES / "plain-minilm.yaml", tmp_path, "lan") as dep:
        result = dep.embed(TEXT)
        got = torch.tensor(result["output"]["embedding"])
        want = reference_embedding("minilm-l6", TEXT)  # the loopback plain run equals this to 1e-6
        assert float((got - want).abs().max()) < 1e-5
        assert result["privacy"]["mismatches"] == []
        policy = load_policy(dep.policy)
        owner_port = policy.zones["plain-owner"].port  # type: ignore[union-attr]
        # The owner's zone answers at its policy address from the client's namespace...
        assert _reachable(dep.namespaces["client"], dep.addresses["owner"], owner_port)
        # ... but not at the client's own loopback: each party is a host of its own.
        assert not _reachable(dep.namespaces["client"], "127.0.0.1", owner_port)
        print("shaping:", dep.shaping)
