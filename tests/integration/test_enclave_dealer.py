"""`dealer: enclave`: the MPC zone's dealer runs inside the keyholder's enclave process instead of at a fourth party.
No dealer process starts; the enclave's process serves the dealer's port and deals triples to the parties over the
mesh with the enclave's certificate; the plans stay accurate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.launcher import running, state_dir
from tests.integration.conftest import Deployment, enclave_deployment, minilm_cosine
from tests.support.hsm import SoftHsm
from zones.mpc.local import free_port

TEXTS = ["Patient reports chest pain radiating to the left arm since this morning.",
         "Transfer of 4,250 EUR to account DE89 3704 0044 0532 0130 00 was declined."]


def _dealer_in_enclave(add_enclave: bool) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["zones"]["mpc"]["dealer"] = "enclave"
        del data["parties"]["dealer"]  # three organisations instead of four
        if add_enclave:  # all-mpc-minilm has no enclave of its own: one that only deals
            data["zones"]["enclave"] = {"kind": "tee", "party": "keyholder", "port": free_port(),
                                        "measurement": "build"}
            data["keys"] = [{"principal": "keyholder/admin", "key": "*",
                             "operations": ["create", "list", "rotate", "destroy", "audit"]}]
    return edit


def _check_served_by_enclave(dep: Deployment) -> None:
    policy = dep.policy
    pids = running(policy)
    assert pids is not None
    assert not any(key.endswith("+dealer") for key in pids), pids  # no dealer process of its own
    party, address = policy.dealer_endpoint("mpc")
    assert (party, policy.dealer_principal("mpc")) == ("keyholder", "keyholder/enclave")
    rt = dep.runtime()
    try:
        assert rt.zones.healthy(address, 5), f"nothing answers at the dealer's port {address}"
    finally:
        rt.close()
    log = (state_dir() / f"{policy.name}.enclave.keyholder.log").read_text()
    assert "dealer of MPC zone mpc served in this enclave" in log


def _embed(dep: Deployment, floor: float) -> None:
    rt = dep.runtime()
    try:
        for text in TEXTS:
            run = rt.embed(text)
            cosine = minilm_cosine(run.output["embedding"], text)
            print(f"{dep.policy.name} with the dealer in the enclave: cosine {cosine:.6f}, "
                  f"{run.metrics['wall_s']} s")
            assert cosine >= floor
            assert run.to_dict()["privacy"]["mismatches"] == []
    finally:
        rt.close()


@pytest.fixture(scope="module")
def all_mpc(hsi_env: Path, softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from enclave_deployment("all-mpc-minilm.yaml", softhsm, tmp_path_factory, 60, _dealer_in_enclave(True))


@pytest.mark.slow  # 61 s with its deployment
def test_all_mpc_minilm_with_the_dealer_in_the_enclave(all_mpc: Deployment) -> None:
    _check_served_by_enclave(all_mpc)
    _embed(all_mpc, 0.999)


@pytest.mark.slow
def test_private_minilm_with_the_dealer_in_the_enclave(hsi_env: Path, softhsm: SoftHsm,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    up = enclave_deployment("private-minilm.yaml", softhsm, tmp_path_factory, 120, _dealer_in_enclave(False))
    dep = next(up)
    try:
        _check_served_by_enclave(dep)
        _embed(dep, 0.999)
    finally:
        next(up, None)
