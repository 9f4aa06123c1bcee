"""The HE zone as a process: public material from the key holder, layer-0 linears on ciphertexts at the owner
with the client running the nonlinear ops in between, and precise refusals of bad ciphertexts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from hsi.ckks.packing import Packing
from hsi.models.executor import PlainExecutor, SessionState, StepContext
from hsi.models.registry import load_model
from hsi.plan import make_plan
from hsi.policy import CkksParams, Policy, load_policy
from hsi.transport.certs import load_credentials
from hsi.transport.material import bundle
from hsi.transport.server import secure_channel
from hsi.transport.stream import frames, receive
from hsi.transport.tensor import StoredTensor
from orchestrator.launcher import ensure_certs
from protos import tensor_pb2 as pb
from protos import zone_pb2, zone_pb2_grpc
from tests.conftest import policy_on_free_ports
from tests.support.tensors import push
from tests.support.zones import start_zone, stop_zone
from zones.common.ckks.crypto import KeyPair, decrypt_matrix, encrypt_matrix, generate_keys
from zones.common.ckks.material import serialize_public
from zones.common.ckks.params import Context, make_context
from zones.common.ckks.tensor import CipherTensor, from_stored

POLICY = Path(__file__).parent / "policies" / "he-block0-minilm.yaml"
TEXT = "Patient reports shortness of breath on exertion and swelling of both ankles for two weeks."


class HeDeployment:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.policy: Policy = load_policy(path)
        self.plan = make_plan(load_model("minilm-l6").graph, self.policy)
        self.certs = Path(os.environ["HSI_CERTS_DIR"])
        target = self.policy.zone_endpoints("h")["owner"]

        def stub(principal: str) -> zone_pb2_grpc.ZoneStub:
            return zone_pb2_grpc.ZoneStub(secure_channel(load_credentials(self.certs, principal), target))

        self.runtime = stub("client/runtime")      # drives stages, pulls results
        self.client_zone = stub("client/c")        # the client's enclave: the planned sender of tee->he
        self.key_holder = stub("keyholder/t")      # the tee zone's principal: installs public material


@pytest.fixture(scope="module")
def he(hsi_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeDeployment]:
    path = policy_on_free_ports(POLICY, tmp_path_factory.mktemp("he"))
    policy = load_policy(path)
    ensure_certs(policy)
    proc = start_zone(path, "h", "owner", tmp_path_factory.mktemp("he-log") / "h.log")
    try:
        yield HeDeployment(path)
    finally:
        stop_zone(proc)


@pytest.fixture(scope="module")
def keys(he: HeDeployment) -> tuple[Context, KeyPair]:
    """The test plays the key holder: it generates the keys and installs the public material."""
    req = he.key_holder.KeyRequirements(zone_pb2.KeyRequirementsRequest(), timeout=10)
    ctx = make_context(CkksParams.model_validate_json(req.params_json))
    kp = generate_keys(ctx, list(req.rotations))
    data, meta = bundle(serialize_public(ctx.cc, kp.public))
    header = pb.TensorHeader(session="keys", name=req.key, encoding=pb.SEALED, source_party="keyholder",
                             dtype="bytes", shape=[len(data)], meta=meta)
    reply = he.key_holder.InstallPublicMaterial(frames(header, data, 1 << 20), timeout=120)
    assert reply.key == "ckks-main" and reply.key_tag == kp.public.GetKeyTag() and reply.rotations == len(req.rotations)
    return ctx, kp


def _push(stub: zone_pb2_grpc.ZoneStub, session: str, name: str, t: StoredTensor) -> None:
    push(stub, t, session, name, "client")


def _pull(he: HeDeployment, session: str, name: str) -> StoredTensor:
    got = receive(he.runtime.PullTensor(zone_pb2.PullTensorRequest(session=session, name=name), timeout=60),
                  1 << 30, 1 << 22)
    h = got.header
    return StoredTensor(h.encoding, h.dtype, tuple(h.shape), got.data, dict(h.meta))


def test_only_the_key_holder_installs_material(he: HeDeployment) -> None:
    with pytest.raises(grpc.RpcError) as e:
        he.runtime.InstallPublicMaterial(iter([]), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_block0_with_he_linears_matches_plaintext(he: HeDeployment, keys: tuple[Context, KeyPair]) -> None:
    ctx, kp = keys
    packing = Packing(ctx.slots, 512)
    m = load_model("minilm-l6")
    weights = m.weights()
    for s in he.plan.stages:
        if s.zone == "h":
            he.runtime.LoadStage(zone_pb2.LoadStageRequest(plan_digest=he.plan.digest, stage=s.index), timeout=300)
    ids = torch.tensor(m.tokenizer(TEXT)["input_ids"])
    env: dict[str, torch.Tensor] = {"input_ids": ids}
    session = "block0"
    received: list[str] = []
    for s in he.plan.stages:
        if s.zone == "c":  # the client's enclave runs its ops; this test plays it and holds the key
            ops = [m.graph.op(n) for n in s.ops]
            env.update(PlainExecutor(ops, weights).run(env, StepContext(0), SessionState(), s.ops))
            continue
        for t in s.inputs:
            enc = encrypt_matrix(ctx, kp.public, packing, env[t].double().numpy())
            _push(he.client_zone, session, t, CipherTensor(enc, packing, *env[t].shape).to_stored())
            received.append(t)
        he.runtime.RunStage(zone_pb2.RunStageRequest(session=session, plan_digest=he.plan.digest, stage=s.index),
                            timeout=300)
        for t in s.outputs:
            stored = _pull(he, session, t)
            assert stored.encoding == pb.CKKS and stored.meta["level"] == "1"
            ct = from_stored(stored, ctx.params.ring_dim, kp.public.GetKeyTag())
            env[t] = torch.from_numpy(decrypt_matrix(ctx, kp.secret, packing, ct.blocks, ct.tokens, ct.features)).float()
    records = he.runtime.Records(zone_pb2.RecordsRequest(session=session), timeout=10).receipts
    # the owner's zone received only ciphertexts, each from the client's zone
    assert {(r.name, r.encoding, r.source_principal) for r in records} == {(t, pb.CKKS, "client/c") for t in received}
    he.runtime.Release(zone_pb2.ReleaseRequest(session=session), timeout=10)
    want = PlainExecutor(m.graph.ops, weights).run({"input_ids": ids}, StepContext(0), SessionState(),
                                                   ["encoder.layer.0.output.LayerNorm", "pool"])
    err = (env["encoder.layer.0.output.LayerNorm"] - want["encoder.layer.0.output.LayerNorm"]).abs().max().item()
    print(f"block 0 output max abs err {err:.2e}")
    assert err <= 1e-2
    assert torch.nn.functional.cosine_similarity(env["pool"], want["pool"], dim=0).item() > 0.9999


def test_bad_ciphertexts_refused_and_zone_keeps_serving(he: HeDeployment, keys: tuple[Context, KeyPair]) -> None:
    ctx, kp = keys
    packing = Packing(ctx.slots, 512)
    plan = he.plan
    q_stage = next(s for s in plan.stages if s.zone == "h" and "encoder.layer.0.attention.self.qkv" in s.ops)
    he.runtime.LoadStage(zone_pb2.LoadStageRequest(plan_digest=plan.digest, stage=q_stage.index), timeout=300)
    x = np.random.default_rng(1).normal(size=(5, 384))
    good = CipherTensor(encrypt_matrix(ctx, kp.public, packing, x), packing, 5, 384).to_stored()

    def run(name: str, t: StoredTensor, then: tuple[zone_pb2.TransferRequest, ...] = ()) -> grpc.StatusCode:
        session = f"bad-{name}"
        try:
            _push(he.client_zone, session, "embeddings.LayerNorm", t)
            he.runtime.RunStage(zone_pb2.RunStageRequest(session=session, plan_digest=plan.digest,
                                                         stage=q_stage.index, then=then), timeout=120)
        except grpc.RpcError as e:
            run.details = e.details()  # type: ignore[attr-defined]
            return e.code()  # type: ignore[no-any-return]
        finally:
            he.runtime.Release(zone_pb2.ReleaseRequest(session=session), timeout=10)
        return grpc.StatusCode.OK

    garbage = StoredTensor(pb.CKKS, "ckks", good.shape, os.urandom(len(good.data)), good.meta)
    assert run("garbage", garbage) == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not deserialise" in run.details  # type: ignore[attr-defined]
    other_ctx = make_context(CkksParams())
    other = generate_keys(other_ctx, [])
    foreign = CipherTensor(encrypt_matrix(other_ctx, other.public, packing, x), packing, 5, 384).to_stored()
    assert run("foreign", foreign) == grpc.StatusCode.INVALID_ARGUMENT
    assert "encrypted under another key" in run.details  # type: ignore[attr-defined]
    wrong_shape = StoredTensor(pb.CKKS, "ckks", (5, 200), good.data, good.meta)
    assert run("shape", wrong_shape) == grpc.StatusCode.INVALID_ARGUMENT
    wrong_packing = StoredTensor(pb.CKKS, "ckks", good.shape, good.data, {**good.meta, "width": "256"})
    assert run("packing", wrong_packing) == grpc.StatusCode.INVALID_ARGUMENT
    spent = ctx.cc.Rescale(ctx.cc.EvalMult(encrypt_matrix(ctx, kp.public, packing, x)[0][0], 1.0))
    low = CipherTensor([[spent]], packing, 5, 384).to_stored()
    assert run("level", low) == grpc.StatusCode.FAILED_PRECONDITION
    assert "needs one multiplicative level" in run.details  # type: ignore[attr-defined]
    plain = StoredTensor(pb.PLAIN, "float32", (5, 384), np.zeros((5, 384), np.float32).tobytes())
    assert run("plain", plain) == grpc.StatusCode.INVALID_ARGUMENT
    # a stage sends on only what it computed
    not_computed = zone_pb2.TransferRequest(name="embeddings.LayerNorm", to_zone="c")
    assert run("then", good, (not_computed,)) == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not compute 'embeddings.LayerNorm'" in run.details  # type: ignore[attr-defined]
    assert run("good", good) == grpc.StatusCode.OK


@pytest.mark.parametrize("payload", [b"\0" * 1000, b"\xff" * 1000], ids=["zeros", "ff"])
def test_bytes_that_are_no_ciphertext_refused_on_push(he: HeDeployment, keys: tuple[Context, KeyPair],
                                                      payload: bytes) -> None:
    """1,000 zero bytes (OpenFHE's Deserialize returns None for them) or 0xff bytes (its error names its build
    path), laid out as one ciphertext: INVALID_ARGUMENT on push, naming the ciphertext and nothing of OpenFHE's
    message; nothing is kept. They used to be kept and fail at RunStage with INTERNAL and OpenFHE's text."""
    ctx, _ = keys
    meta = {**Packing(ctx.slots, 512).meta(), "grid": "1,1", "lengths": str(len(payload)), "level": "0"}
    session = f"no-ciphertext-{payload[0]}"
    with pytest.raises(grpc.RpcError) as e:
        _push(he.client_zone, session, "embeddings.LayerNorm", StoredTensor(pb.CKKS, "ckks", (5, 384), payload, meta))
    details = e.value.details()
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details == "tensor 'embeddings.LayerNorm': ciphertext 0 does not deserialise"
    assert he.runtime.Records(zone_pb2.RecordsRequest(session=session), timeout=10).receipts == []
    assert he.runtime.Release(zone_pb2.ReleaseRequest(session=session), timeout=10).freed_tensors == 0
