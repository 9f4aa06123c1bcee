"""Shared fixtures: a private dev PKI and state directory per test session, and policies on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "deploy" / "policies"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on loopback right now."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def policy_on_free_ports(src: Path, dst_dir: Path, **overrides: object) -> Path:
    """Copy a policy with every port replaced by a free one (and top-level keys overridden)."""
    data = yaml.safe_load(src.read_text())
    zones = data["zones"]
    slots = []
    for z in zones.values():
        if z["kind"] == "mpc":
            slots += [(m, "port") for m in z["parties"].values()] + [(z, "dealer_port"), (z, "rendezvous_port")]
        else:
            slots.append((z, "port"))
    for (obj, key), port in zip(slots, free_ports(len(slots)), strict=True):
        obj[key] = port
    data.update(overrides)
    out = dst_dir / src.name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


# Every SoftHSM2 token the tests use. SoftHSM2 reads SOFTHSM2_CONF once per process (at the first
# C_Initialize), so all tokens live in one directory created before any test loads the library.
SOFTHSM_TOKENS = {"hsi-test": "1234-test", "hsi-it": "it-pin-1234"}


@dataclass(frozen=True)
class SoftHsm:
    """The test session's SoftHSM2 configuration and token PINs."""

    conf: Path
    pins: dict[str, str]


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """One SoftHSM2 token directory for the whole test session, with every test token initialised."""
    from zones.tee.hsm import init_softhsm_token

    d = tmp_path_factory.mktemp("softhsm")
    conf = d
    for label, pin in SOFTHSM_TOKENS.items():
        conf = init_softhsm_token(d, label, pin, "so-" + pin)
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return SoftHsm(conf, dict(SOFTHSM_TOKENS))


@pytest.fixture(scope="session")
def hsi_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private certificate and state directory for the test session (HSI_CERTS_DIR, HSI_STATE_DIR)."""
    base = tmp_path_factory.mktemp("hsi")
    old = {k: os.environ.get(k) for k in ("HSI_CERTS_DIR", "HSI_STATE_DIR")}
    os.environ["HSI_CERTS_DIR"] = str(base / "certs")
    os.environ["HSI_STATE_DIR"] = str(base / "run")
    yield base
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def wait_serving(target: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Wait until the zone process `proc` answers health checks at `target`; its log if it dies or times out."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from zones.common.certs import load_credentials
    from zones.common.server import secure_channel

    creds = load_credentials(Path(os.environ["HSI_CERTS_DIR"]), "client/runtime")
    stub = health_pb2_grpc.HealthStub(secure_channel(creds, target))
    end = time.monotonic() + timeout
    while True:
        try:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            return
        except grpc.RpcError:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.3)
