"""mTLS and method-level authorisation of zones, and rejection of bad tensor streams without losing service."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
import torch

from hsi.transport.certs import init_ca, issue, load_credentials
from hsi.transport.codec import encode_tensor
from hsi.transport.server import secure_channel
from hsi.transport.stream import frames
from orchestrator.reference import reference_embedding
from protos import tensor_pb2 as pb
from protos import zone_pb2, zone_pb2_grpc
from tests.integration.conftest import Deployment


def _stub(d: Deployment, principal: str, zone: str, certs: Path | None = None) -> zone_pb2_grpc.ZoneStub:
    certs = certs or d.certs
    issue(certs, principal, ["127.0.0.1"])
    creds = load_credentials(certs, principal)
    target = d.policy.zone_endpoints(zone)[d.policy.zones[zone].party]  # type: ignore[union-attr]
    return zone_pb2_grpc.ZoneStub(secure_channel(creds, target))


def _load(stub: zone_pb2_grpc.ZoneStub) -> None:
    stub.LoadStage(zone_pb2.LoadStageRequest(plan_digest="x", stage=0), timeout=10)


def test_no_client_certificate_refused(plain_minilm: Deployment) -> None:
    target = plain_minilm.policy.zone_endpoints("plain-owner")["owner"]
    ca = (plain_minilm.certs / "ca.pem").read_bytes()
    stub = zone_pb2_grpc.ZoneStub(grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca)))
    with pytest.raises(grpc.RpcError) as e:
        _load(stub)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails: a client cert is required
    plain = zone_pb2_grpc.ZoneStub(grpc.insecure_channel(target))
    with pytest.raises(grpc.RpcError) as e:
        _load(plain)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificate_from_another_ca_refused(plain_minilm: Deployment, tmp_path: Path) -> None:
    init_ca(tmp_path)
    # the client trusts the real CA so the failure is the server refusing the foreign client certificate
    (tmp_path / "ca.pem").write_bytes((plain_minilm.certs / "ca.pem").read_bytes())
    with pytest.raises(grpc.RpcError) as e:
        _load(_stub(plain_minilm, "client/runtime", "plain-owner", tmp_path))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_unknown_principal_refused(plain_minilm: Deployment) -> None:
    with pytest.raises(grpc.RpcError) as e:
        _load(_stub(plain_minilm, "mallory/runtime", "plain-owner"))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "principal 'mallory/runtime' may not call /hsi.v1.Zone/LoadStage" in e.value.details()


def test_zone_principal_may_not_drive_another_zone(plain_minilm: Deployment) -> None:
    with pytest.raises(grpc.RpcError) as e:
        _load(_stub(plain_minilm, "client/embed-client", "plain-owner"))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_only_planned_senders_may_push(plain_minilm: Deployment) -> None:
    # the plan never has the runtime send to the owner's zone directly
    stub = _stub(plain_minilm, "client/runtime", "plain-owner")
    header = pb.TensorHeader(session="s1", name="embeddings.LayerNorm", encoding=pb.PLAIN, source_party="client",
                             dtype="float32", shape=[1])
    with pytest.raises(grpc.RpcError) as e:
        stub.PushTensor(frames(header, b"\0" * 4, 1024), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _push(stub: zone_pb2_grpc.ZoneStub, fs: list[pb.TensorFrame]) -> grpc.StatusCode:
    try:
        stub.PushTensor(iter(fs), timeout=10)
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_bad_streams_rejected_and_zone_keeps_serving(plain_minilm: Deployment) -> None:
    stub = _stub(plain_minilm, "client/runtime", "embed-client")
    dtype, shape, data = encode_tensor(torch.arange(12))
    header = pb.TensorHeader(session="bad", name="input_ids", encoding=pb.PLAIN, source_party="client",
                             dtype=dtype, shape=shape)
    good = list(frames(header, data, 1 << 16))
    oversized = list(frames(header, data, 1 << 16))
    oversized[0].header.total_bytes = plain_minilm.policy.transport.max_tensor_bytes + 1
    corrupt = list(frames(header, data, 1 << 16))
    corrupt[1].chunk.data = b"\xff" * len(data)
    truncated = good[:-1]
    spoofed = list(frames(pb.TensorHeader(session="bad", name="input_ids", encoding=pb.PLAIN, source_party="owner",
                                          dtype=dtype, shape=shape), data, 1 << 16))
    assert _push(stub, oversized) == grpc.StatusCode.INVALID_ARGUMENT
    assert _push(stub, corrupt) == grpc.StatusCode.DATA_LOSS
    assert _push(stub, truncated) == grpc.StatusCode.DATA_LOSS
    assert _push(stub, spoofed) == grpc.StatusCode.INVALID_ARGUMENT
    # nothing of the rejected streams was kept
    assert stub.Records(zone_pb2.RecordsRequest(session="bad"), timeout=10).receipts == []
    assert _push(stub, good) == grpc.StatusCode.OK
    assert stub.Release(zone_pb2.ReleaseRequest(session="bad"), timeout=10).freed_tensors == 1
    rt = plain_minilm.runtime()
    try:
        got = torch.tensor(rt.embed("still serving").output["embedding"])
    finally:
        rt.close()
    assert torch.allclose(got, reference_embedding("minilm-l6", "still serving"), atol=1e-5)


def test_bad_requests_get_precise_status(plain_minilm: Deployment) -> None:
    stub = _stub(plain_minilm, "client/runtime", "embed-client")
    with pytest.raises(grpc.RpcError) as e:
        _load(stub)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "plan digest mismatch" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.PullTensor(zone_pb2.PullTensorRequest(session="nope", name="pool"), timeout=10).next()
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    rt = plain_minilm.runtime()
    try:
        digest = rt.plan.digest
        stub.LoadStage(zone_pb2.LoadStageRequest(plan_digest=digest, stage=0), timeout=60)
        with pytest.raises(grpc.RpcError) as e:
            stub.LoadStage(zone_pb2.LoadStageRequest(plan_digest=digest, stage=1), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "belongs to zone 'plain-owner'" in \
            e.value.details()
        # token ids outside the vocabulary
        dtype, shape, data = encode_tensor(torch.tensor([101, 10**6, 102]))
        header = pb.TensorHeader(session="ids", name="input_ids", encoding=pb.PLAIN, source_party="client",
                                 dtype=dtype, shape=shape)
        assert _push(stub, list(frames(header, data, 1 << 16))) == grpc.StatusCode.OK
        with pytest.raises(grpc.RpcError) as e:
            stub.RunStage(zone_pb2.RunStageRequest(session="ids", plan_digest=digest, stage=0), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "outside the vocabulary" in e.value.details()
        stub.Release(zone_pb2.ReleaseRequest(session="ids"), timeout=10)
    finally:
        rt.close()
    assert os.environ["HSI_CERTS_DIR"] == str(plain_minilm.certs)


def _refusal(stub: zone_pb2_grpc.ZoneStub, fs: list[pb.TensorFrame]) -> tuple[grpc.StatusCode, str]:
    try:
        stub.PushTensor(iter(fs), timeout=10)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def test_malformed_tensors_refused_on_push_by_field(plain_minilm: Deployment) -> None:
    """Unknown encoding, unknown dtype, a shape whose element count overflows int64, a payload the shape does not
    take: each refused on push with INVALID_ARGUMENT naming the field (they used to be kept and fail at RunStage
    with INTERNAL "ValueError: ..."), nothing kept, and no exception text on the wire."""
    stub = _stub(plain_minilm, "client/runtime", "embed-client")

    def header(**fields: object) -> pb.TensorHeader:
        base: dict[str, object] = {"session": "malformed", "name": "input_ids", "encoding": pb.PLAIN,
                                   "source_party": "client", "dtype": "int64", "shape": [3]}
        return pb.TensorHeader(**(base | fields))  # type: ignore[arg-type]

    cases = {
        "encoding 99": (header(encoding=99), b"\0" * 24),
        "dtype 'float16'": (header(dtype="float16"), b"\0" * 6),
        "2^48 elements": (header(shape=[1 << 62, 4]), b""),  # 2^64 elements: int64's product wraps to 0
        "negative dimension": (header(shape=[-1, -3]), b"\0" * 24),
        "takes 24 bytes; the payload has 16": (header(), b"\0" * 16),
    }
    for words, (h, data) in cases.items():
        code, details = _refusal(stub, list(frames(h, data, 1 << 16)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details, (words, code, details)
        assert "tensor 'input_ids'" in details and "Error" not in details and "/" not in details
    assert stub.Records(zone_pb2.RecordsRequest(session="malformed"), timeout=10).receipts == []
    assert stub.Release(zone_pb2.ReleaseRequest(session="malformed"), timeout=10).freed_tensors == 0
    assert _push(stub, list(frames(header(), b"\0" * 24, 1 << 16))) == grpc.StatusCode.OK
    assert stub.Release(zone_pb2.ReleaseRequest(session="malformed"), timeout=10).freed_tensors == 1
