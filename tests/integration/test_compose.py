"""Every party's zones in containers: the image of deploy/compose/Dockerfile, one compose project per party
beside its bundle, on the host network at the policy's addresses; the client's runtime on the host.

Slow, and needs a Docker daemon, a compose CLI and the image (`HSI_IMAGE`, default hsi:latest). Where Docker
Hub is out of reach, deploy/compose/offline-base.sh builds the base first (README, "Deploying across parties").
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import yaml

from hsi.policy import TeeZone, load_policy
from orchestrator.bundle import make_bundle
from orchestrator.compose import project_name, render_yaml
from orchestrator.launcher import ensure_keys
from orchestrator.runtime import Runtime
from tests.conftest import POLICIES, policy_on_free_ports
from tests.integration.conftest import minilm_cosine

IMAGE = os.environ.get("HSI_IMAGE", "hsi:latest")
TEXT = "Each party runs its own containers."


@cache
def _compose_cli() -> tuple[str, ...] | None:
    """`docker compose` (v2) or `docker-compose` (v1), whichever this host has."""
    if shutil.which("docker") is None:
        return None
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return ("docker", "compose")
    return ("docker-compose",) if shutil.which("docker-compose") else None


def _why_not() -> str | None:
    """Why these tests cannot run here, or None."""
    if _compose_cli() is None:
        return "no docker CLI with compose"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        return "no Docker daemon"
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=30).returncode != 0:
        return f"no image {IMAGE} (docker build -f deploy/compose/Dockerfile -t {IMAGE} .)"
    return None


WHY_NOT = _why_not()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))]


def _docker(*args: str, timeout: float = 300.0) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"docker {' '.join(args)}: {r.stderr.strip()[-1500:]}"
    return r.stdout


class Parties:
    """One compose project per party of a policy, each in its own directory: bundle/, state/, compose.yaml."""

    def __init__(self, policy: Path, work: Path) -> None:
        self.policy, self.work = policy, work
        self.names = list(load_policy(policy).parties)
        for party in self.names:
            make_bundle(policy, party, work / party / "bundle", pki=work / "pki")
            (work / party / "compose.yaml").write_text(render_yaml(policy, party, IMAGE))

    def compose(self, party: str, *args: str, check: bool = True) -> str:
        cli = _compose_cli()
        assert cli is not None
        r = subprocess.run([*cli, "-p", project_name(self.policy, party), *args], cwd=self.work / party,
                           capture_output=True, text=True, timeout=300)
        assert not check or r.returncode == 0, f"{party}: compose {' '.join(args)}: {r.stderr.strip()[-1500:]}"
        return r.stdout

    def certs(self, party: str) -> str:
        return str(self.work / party / "bundle" / "certs")

    def bundle_policy(self, party: str) -> Path:
        return self.work / party / "bundle" / "policy.yaml"

    def crash(self, party: str) -> None:
        """SIGKILL the main process of each of the party's containers, as a crash would; Docker restarts them."""
        for cid in self.compose(party, "ps", "-q").split():
            pid = int(_docker("inspect", "-f", "{{.State.Pid}}", cid))
            restarts = int(_docker("inspect", "-f", "{{.RestartCount}}", cid))
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while int(_docker("inspect", "-f", "{{.RestartCount}}", cid)) == restarts:
                assert time.monotonic() < deadline, f"container {cid} of {party} was not restarted"
                time.sleep(0.5)

    def down(self) -> None:
        """Stop and remove every party's containers (each party's, whatever happens to another's)."""
        for party in self.names:
            self.compose(party, "down", "-t", "5", check=False)

    def logs(self) -> str:
        return "\n".join(f"--- {p}:\n{self.compose(p, 'logs', '--tail', '30')}" for p in self.names)


@pytest.fixture
def parties(hsi_env: Path, tmp_path: Path, request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Parties]:
    """The policy named by the test's parameter on free ports, every party's zones up in its containers (a tee
    party's dev HSM token made first in its ./state, and the policy pinning that token's platform key)."""
    path = policy_on_free_ports(POLICIES / f"{request.param}.yaml", tmp_path)
    data = yaml.safe_load(path.read_text())
    for zone in data["zones"].values():
        if zone["kind"] == "tee":
            state = tmp_path / zone["party"] / "state"
            state.mkdir(parents=True)
            _docker("run", "--rm", "-v", f"{state}:/state", "-w", "/state", IMAGE,
                    "hsi", "tee", "init-token", "--dir", ".hsi/softhsm", "--label", zone["hsm"]["token_label"])
            # the key holder publishes its platform key; the parties' policy pins it
            zone["platform_key"] = (state / ".hsi/softhsm/platform.pub").read_text().strip()
            zone.pop("platform_key_file", None)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    deployment = Parties(path, tmp_path)
    monkeypatch.setenv("HSI_API_KEY", "compose-test-key")  # the client's `hsi serve` refuses to start without one
    try:
        for party in deployment.names:
            deployment.compose(party, "up", "-d")
        policy = load_policy(path)
        monkeypatch.setenv("HSI_CERTS_DIR", deployment.certs(policy.client))
        _wait_ready(deployment, policy.client)
        for zone in policy.zones.values():
            if isinstance(zone, TeeZone):  # the key holder's admin creates the HE keys, from its own bundle
                monkeypatch.setenv("HSI_CERTS_DIR", deployment.certs(zone.party))
                ensure_keys(load_policy(deployment.bundle_policy(zone.party)))
        monkeypatch.setenv("HSI_CERTS_DIR", deployment.certs(policy.client))
        yield deployment
    finally:
        deployment.down()


def _wait_ready(deployment: Parties, client: str, timeout: float = 240.0) -> None:
    rt = Runtime(load_policy(deployment.bundle_policy(client)))
    try:
        rt.wait_ready(timeout)
    except Exception:
        print(deployment.logs())
        raise
    finally:
        rt.close()


def _embed(deployment: Parties) -> tuple[list[float], dict[str, object]]:
    policy = load_policy(deployment.bundle_policy(load_policy(deployment.policy).client))
    rt = Runtime(policy)
    try:
        r = rt.embed(TEXT)
    finally:
        rt.close()
    assert r.privacy["mismatches"] == []
    return r.output["embedding"], r.metrics


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("parties", ["plain-minilm", "all-mpc-minilm", "private-minilm"], indirect=True)
def test_parties_in_containers_embed_as_plaintext_and_recover(parties: Parties) -> None:
    """The embedding from containerised zones matches plaintext; a party whose containers crash is restarted by
    Docker under the same bundle (and state), and the next run matches again."""
    policy = load_policy(parties.policy)
    got, metrics = _embed(parties)
    cosine = minilm_cosine(got, TEXT)
    print(f"{parties.policy.stem} in containers: cosine {cosine:.6f}, {metrics['wall_s']} s")
    assert cosine >= 0.995
    # a tee zone's party if there is one (its enclave must unseal its keys from ./state), else the first non-client
    victim = next((z.party for z in policy.zones.values() if isinstance(z, TeeZone)),
                  next(p for p in parties.names if p != policy.client))
    parties.crash(victim)
    _wait_ready(parties, policy.client)
    again, metrics = _embed(parties)
    cosine = minilm_cosine(again, TEXT)
    print(f"{parties.policy.stem} after {victim}'s containers crashed: cosine {cosine:.6f}, {metrics['wall_s']} s")
    assert cosine >= 0.995
