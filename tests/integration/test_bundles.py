"""Deployment bundles: one per party, no shared private key, and the parties' zones run from them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hsi.policy import load_policy
from hsi.transport.certs import load_credentials
from orchestrator.bundle import BundleError, make_bundle
from orchestrator.launcher import ensure_certs
from orchestrator.reference import reference_embedding
from orchestrator.runtime import Runtime
from tests.conftest import POLICIES, policy_on_free_ports
from tests.support.zones import start_zone


def _keys(bundle: Path) -> set[bytes]:
    return {p.read_bytes() for p in (bundle / "certs").glob("*.key")}


def test_bundles_hold_only_their_partys_keys(hsi_env: Path, tmp_path: Path) -> None:
    path = policy_on_free_ports(POLICIES / "all-mpc-minilm.yaml", tmp_path)
    bundles = {party: tmp_path / party for party in ("client", "owner", "keyholder", "dealer")}
    manifests = {party: make_bundle(path, party, out) for party, out in bundles.items()}
    assert manifests["client"]["principals"] == ["client/embed-client", "client/runtime"]
    assert manifests["owner"]["principals"] == ["owner/mpc"]
    assert [(p["zone"], p["dealer"]) for p in manifests["dealer"]["processes"]] == [("mpc", True)]  # type: ignore[attr-defined]
    assert json.loads((bundles["dealer"] / "bundle.json").read_text())["party"] == "dealer"
    for party, out in bundles.items():
        names = sorted(p.name for p in (out / "certs").iterdir())
        assert "ca.key" not in names and "ca.pem" in names
        assert all(n.split("__")[0] == party for n in names if n != "ca.pem"), names
        assert all(k.stat().st_mode & 0o077 == 0 for k in (out / "certs").glob("*.key"))
        assert load_policy(out / "policy.yaml").digest() != ""  # a valid policy
    parties = list(bundles)
    for i, a in enumerate(parties):
        for b in parties[i + 1:]:
            assert not _keys(bundles[a]) & _keys(bundles[b]), f"{a} and {b} share a private key"
    with pytest.raises(BundleError, match="not empty"):
        make_bundle(path, "owner", bundles["owner"])
    with pytest.raises(BundleError, match="no party 'mallory'"):
        make_bundle(path, "mallory", tmp_path / "m")


@pytest.mark.slow  # 32 s
def test_parties_run_their_zones_from_their_bundles(hsi_env: Path, tmp_path: Path) -> None:
    path = policy_on_free_ports(POLICIES / "plain-minilm.yaml", tmp_path)
    hsi = str(Path(sys.executable).parent / "hsi")
    procs = []
    for party in ("owner", "client"):
        make_bundle(path, party, tmp_path / party)
        procs.append(subprocess.Popen([str(tmp_path / party / "start.sh")], env={**os.environ, "HSI": hsi},
                                      start_new_session=True))
    try:
        policy = load_policy(tmp_path / "client" / "policy.yaml")
        creds = load_credentials(tmp_path / "client" / "certs", policy.runtime_principal)
        rt = Runtime(policy, certs=creds)
        try:
            rt.wait_ready(timeout=120)
            text = "Bundles carry each party's own keys."
            got = torch.tensor(rt.embed(text).output["embedding"])
        finally:
            rt.close()
        cosine = float(torch.nn.functional.cosine_similarity(got, reference_embedding("minilm-l6", text), dim=0))
        assert cosine > 0.9999
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)


@pytest.mark.slow  # 12 s
def test_a_zone_stops_under_a_burst_of_signals(hsi_env: Path, tmp_path: Path) -> None:
    # start.sh's trap re-sends TERM right after a group kill; a handler taking a lock the main thread may hold
    # deadlocked a zone here once (CI, session 8), so the zone gets many signals back to back
    path = policy_on_free_ports(POLICIES / "plain-minilm.yaml", tmp_path)
    ensure_certs(load_policy(path))
    log = tmp_path / "zone.log"
    proc = start_zone(path, "embed-client", "client", log)
    try:
        for _ in range(500):
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
