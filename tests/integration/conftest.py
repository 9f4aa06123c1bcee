"""Zones started as real processes over mTLS, once per module, on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from hsi.policy import Policy, load_policy
from hsi.transport.attestation import measurement
from hsi.transport.certs import issue
from hsi.transport.keyclient import KeyClient
from orchestrator.launcher import down, ensure_certs, running, up
from orchestrator.reference import reference_embedding
from orchestrator.runtime import RunError, Runtime
from tests.conftest import POLICIES, policy_on_free_ports
from tests.support.hsm import SoftHsm
from tests.support.zones import start_zone, stop_zone

TEE_TEMPLATE = Path(__file__).parent / "policies" / "tee-he-minilm.yaml"
# Raw prompts (no chat template) of the SmolLM2 slow tests of whole-model private plans: short prefills.
RAW_PROMPTS = ["The capital of France is", "Write a haiku about the sea.", "My favourite fruit is",
               "To make a cup of tea, first"]


def minilm_cosine(got: list[float], text: str) -> float:
    """Cosine similarity of an embedding a plan computed to the plaintext MiniLM embedding of `text`."""
    want = reference_embedding("minilm-l6", text)
    return float(torch.nn.functional.cosine_similarity(torch.tensor(got), want, dim=0))


class Deployment:
    """A running local deployment of one policy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.policy: Policy = load_policy(path)
        self.certs = Path(os.environ["HSI_CERTS_DIR"])

    def runtime(self) -> Runtime:
        return Runtime(self.policy)


def fault_during_run(dep: Deployment, process: str, sig: int, after_s: float, join_s: float) -> tuple[str, float]:
    """Embed a sentence and, `after_s` into it, signal the process group of `process` (`zone@party`); the run's
    error and how long it took to fail."""
    pids = running(dep.policy)
    assert pids is not None
    rt = dep.runtime()
    rt.load()
    result: dict[str, object] = {}

    def run() -> None:
        try:
            rt.embed("Follow-up visit: blood pressure well controlled on amlodipine, continue current dose.")
            result["error"] = None
        except RunError as e:
            result["error"] = str(e)

    t = threading.Thread(target=run)
    start = time.monotonic()
    t.start()
    time.sleep(after_s)
    os.killpg(pids[process], sig)  # the whole process group: the zone and its workers
    t.join(timeout=join_s)
    rt.close()
    assert not t.is_alive(), "the run did not end"
    assert result["error"], f"the run succeeded although {process} was signalled"
    return str(result["error"]), time.monotonic() - start


def enclave_deployment(name: str, softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory,
                       rpc_s: float, edit: Callable[[dict[str, Any]], None] | None = None) -> Iterator[Deployment]:
    """A shipped policy with a tee zone (after `edit`, which may add one), on free ports, its enclave on the test
    session's SoftHSM2 token."""
    work = tmp_path_factory.mktemp("enclave")
    path = policy_on_free_ports(POLICIES / name, work)
    data = yaml.safe_load(path.read_text())
    if edit:
        edit(data)
    pin, _ = softhsm.enclave_files(work)  # what `hsi tee init-token` leaves
    tee = next(z for z in data["zones"].values() if z["kind"] == "tee")
    tee.update(platform_key_file=str(work / "platform.pub"), key_dir=str(work / "keys"),
               audit_log=str(work / "audit.log"),
               hsm={"token_label": "hsi-it", "pin_file": str(pin), "softhsm_conf": str(softhsm.conf)})
    data["transport"]["deadlines"]["rpc_s"] = rpc_s
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    up(path)  # also creates the HE zone's key in the enclave, as the keyholder's admin
    try:
        yield Deployment(path)
    finally:
        down(path)


def deployment(name: str, tmp_path_factory: pytest.TempPathFactory, transport: dict[str, object] | None = None,
               model: dict[str, object] | None = None,
               zones: dict[str, dict[str, object]] | None = None) -> Iterator[Deployment]:
    """A shipped policy on free ports, up for the block (its transport, model and zone settings updated by
    `transport`, `model` and `zones`: zone name -> settings)."""
    path = policy_on_free_ports(POLICIES / name, tmp_path_factory.mktemp("policy"))
    if transport or model or zones:
        data = yaml.safe_load(path.read_text())
        data.setdefault("transport", {}).update(transport or {})
        data["model"].update(model or {})
        for zone, settings in (zones or {}).items():
            data["zones"][zone].update(settings)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    up(path)
    try:
        yield Deployment(path)
    finally:
        down(path)


@pytest.fixture(scope="module")
def plain_minilm(hsi_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from deployment("plain-minilm.yaml", tmp_path_factory, model={"max_batch": 3})  # 4 texts take 2 passes


@pytest.fixture(scope="module")
def plain_smollm2(hsi_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from deployment("plain-smollm2.yaml", tmp_path_factory)


class TeeDeployment:
    """Zone processes of the tee-he-minilm test policy: a tee zone `t` on a temporary SoftHSM2 token (and the HE
    zone `h` that takes its public material), started one by one."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path, self.workdir = path, workdir
        self.policy: Policy = load_policy(path)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, zone: str, party: str) -> None:
        self.procs[zone] = start_zone(self.path, zone, party, self.workdir / f"{zone}.log")

    def stop(self, zone: str, sig: int = signal.SIGTERM) -> None:
        stop_zone(self.procs.pop(zone), sig)

    def client(self, principal: str) -> KeyClient:
        return KeyClient(self.policy, "t", principal)


def tee_deployment(softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory,
                   zones: list[tuple[str, str]]) -> Iterator[TeeDeployment]:
    """The tee-he-minilm policy on free ports with `zones` ((zone, party)) running; certificates also for
    `mallory/x` (no grant) and `keyholder/probe` (narrow grants, to reach the checks behind a grant)."""
    work = tmp_path_factory.mktemp("tee")
    pin_file, platform = softhsm.enclave_files(work)
    text = TEE_TEMPLATE.read_text()
    for k, v in {"PIN_FILE": pin_file, "SOFTHSM_CONF": softhsm.conf, "KEY_DIR": work / "keys",
                 "AUDIT_LOG": work / "audit.log", "MEASUREMENT": measurement().hex(),
                 "PLATFORM_KEY": platform.hex()}.items():
        text = text.replace(k, str(v))
    text += ('  - {principal: keyholder/probe, key: ckks-main, operations: [get_public_material, encrypt_share], '
             'recipients: [owner/h]}\n')
    src = work / "tee-he-minilm.yaml"
    src.write_text(text)
    path = policy_on_free_ports(src, tmp_path_factory.mktemp("tee-policy"))
    d = TeeDeployment(path, work)
    ensure_certs(d.policy)
    for extra in ("mallory/x", "keyholder/probe"):
        issue(Path(os.environ["HSI_CERTS_DIR"]), extra, ["127.0.0.1"])
    try:
        for zone, party in zones:
            d.start(zone, party)
        yield d
    finally:
        for z in list(d.procs):
            d.stop(z)
