"""MiniLM with linears in HE at the owner and everything else inside the keyholder's enclave: he -> tee (the
enclave decrypts), tee -> he (it encrypts), plain -> tee (after attestation) and tee -> client, across real zone
processes. Accuracy, what every party received, the enclave's grants and audit, and its refusals."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from hsi.audit import read_log, verify_records
from hsi.policy import Policy
from hsi.transport.certs import load_credentials
from hsi.transport.server import secure_channel
from hsi.transport.tensor import StoredTensor
from orchestrator.runtime import RunError
from protos import tensor_pb2 as pb
from protos import zone_pb2, zone_pb2_grpc
from tests.integration.conftest import Deployment, enclave_deployment, minilm_cosine
from tests.support.hsm import SoftHsm
from tests.support.tensors import channel_as, push
from zones.common.ckks.encryptor import PublicEncryptor

RPC_S = 60.0


@pytest.fixture(scope="module")
def enclave(hsi_env: Path, softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from enclave_deployment("enclave-minilm.yaml", softhsm, tmp_path_factory, RPC_S)


@pytest.mark.slow  # 91 s; the enclave plan across namespaces is slow too
def test_enclave_minilm_matches_plaintext_and_the_owner_sees_ciphertexts_only(enclave: Deployment) -> None:
    rt = enclave.runtime()
    try:
        # four tokens go to the HE zone in the lane layout, the long one token-batched
        for text in ["Chest pain", "Quarterly dividend of $0.24 per share payable to holders of record on June 1."]:
            run = rt.embed(text).to_dict()
            cosine = minilm_cosine(run["output"]["embedding"], text)
            print(f"enclave-minilm cosine {cosine:.6f}, {run['output']['tokens']} tokens, {run['metrics']['wall_s']} s, "
                  f"{run['metrics']['time_by_zone']}")
            assert cosine >= 0.999
            privacy = run["privacy"]
            assert privacy["mismatches"] == []
            got: dict[tuple[str, str], set[tuple[str, str]]] = {}
            for r in privacy["observed"]:
                got.setdefault((r["zone"], r["party"]), set()).add((r["encoding"], r["source_principal"]))
            assert got[("he", "owner")] == {("ckks", "keyholder/enclave")}
            assert got[("enclave", "keyholder")] == {("plain", "client/runtime"), ("ckks", "owner/he")}
            report = privacy["report"]
            assert report["owner"]["activations"] == [] and report["keyholder"]["activations"] == []
            assert "pool" in report["client"]["activations"]
    finally:
        rt.close()
    log = read_log(Path(enclave.policy.zones["enclave"].audit_log))  # type: ignore[union-attr]
    assert verify_records(log) == []
    allowed = {(r.principal, r.operation, r.reason) for r in log if r.decision == "allow"}
    assert ("owner/he", "decrypt_in_enclave", "granted") in allowed
    assert ("keyholder/enclave", "encrypt_result", "granted, to owner/he") in allowed


def _push(policy: Policy, principal: str, name: str, t: StoredTensor) -> grpc.RpcError:
    """The error the enclave zone answers a pushed tensor with, sent as `principal`."""
    with channel_as(principal, policy.zone_endpoints("enclave")["keyholder"]) as ch:
        with pytest.raises(grpc.RpcError) as e:
            push(zone_pb2_grpc.ZoneStub(ch), t, "probe", name, principal.split("/")[0], timeout=RPC_S)
        return e.value


def test_enclave_decrypts_only_for_granted_he_zones_and_releases_only_outputs(enclave: Deployment) -> None:
    policy = enclave.policy
    ct = PublicEncryptor(policy, "owner/he").encrypt("he", np.random.default_rng(0).normal(size=(3, 384)))
    # the runtime may push input ids to the enclave, but a ciphertext from it is not an HE zone's to decrypt
    e = _push(policy, "client/runtime", "encoder.layer.0.attention.self.qkv", ct)
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "no HE zone" in e.details()
    # a sealed blob from outside opens nowhere
    sealed = StoredTensor(pb.SEALED, "float32", (1,), b"\0" * 32, {"nonce": "00" * 12})
    e = _push(policy, "client/runtime", "input_ids", sealed)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "sealed" in e.details()
    # the enclave releases to the client only the plan's outputs, never an intermediate activation
    creds = load_credentials(Path(os.environ["HSI_CERTS_DIR"]), "client/runtime")
    ch = secure_channel(creds, policy.zone_endpoints("enclave")["keyholder"])
    try:
        with pytest.raises(grpc.RpcError) as err:
            list(zone_pb2_grpc.ZoneStub(ch).PullTensor(
                zone_pb2.PullTensorRequest(session="probe", name="input_ids"), timeout=RPC_S))
    finally:
        ch.close()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND or (
        err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "does not release" in err.value.details())


@pytest.mark.slow  # 62 s
def test_no_plaintext_goes_to_an_enclave_that_fails_attestation(enclave: Deployment) -> None:
    rt = enclave.runtime()
    zone = rt.policy.zones["enclave"]
    # the client expects another enclave build than the one running (the plan itself is unchanged)
    rt.policy.zones["enclave"] = zone.model_copy(update={"measurement": "ab" * 32})
    try:
        with pytest.raises(RunError, match="no plaintext goes to enclave 'enclave': its attestation failed.*measurement"):
            rt.embed("Sunny with a light breeze.")
    finally:
        rt.close()
