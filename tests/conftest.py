"""Shared fixtures: a private dev PKI and state directory per test session, the test HSM tokens, and policies
on free ports."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.hsm import SoftHsm, init_tokens
from zones.tee.hsm import Hsm

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


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """One SoftHSM2 token directory for the whole test session, with every test token initialised."""
    tokens = init_tokens(tmp_path_factory.mktemp("softhsm"))
    os.environ["SOFTHSM2_CONF"] = str(tokens.conf)
    return tokens


@pytest.fixture()
def hsm(softhsm: SoftHsm) -> Iterator[Hsm]:
    """An open session on the unit tests' token."""
    h = softhsm.open("hsi-test")
    yield h
    h.close()


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
