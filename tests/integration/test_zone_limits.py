"""Limits on what a zone process holds, against real zone processes: idle sessions expire, bytes are bounded."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from hsi.policy import Policy, load_policy
from hsi.transport.tensor import StoredTensor
from orchestrator.launcher import ensure_certs
from protos import tensor_pb2 as pb
from protos import zone_pb2, zone_pb2_grpc
from tests.conftest import POLICIES, policy_on_free_ports
from tests.support.tensors import channel_as, push
from tests.support.zones import start_zone, stop_zone

MB = 1_000_000  # a tensor of this many bytes fits max_tensor_bytes (1 MiB) with room for the receipt


def _zone(tmp: Path, transport: dict[str, object]) -> tuple[Policy, Path]:
    base = {"tls": {"certs_dir": ".hsi/certs"}, "chunk_bytes": 1 << 20, "deadlines": {"rpc_s": 30, "stage_s": 300}}
    path = policy_on_free_ports(POLICIES / "plain-minilm.yaml", tmp, transport=base | transport)
    policy = load_policy(path)
    ensure_certs(policy)
    return policy, path


@pytest.fixture(scope="module")
def runtime_stubs(hsi_env: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, zone_pb2_grpc.ZoneStub]]:
    """The embed-client zone of plain-minilm twice, as the runtime drives it: with a 1 s idle timeout, and with
    byte limits of 2 MiB per session and 3 MiB per zone."""
    zones: dict[str, dict[str, object]] = {
        "idle": {"session_idle_s": 1.0},
        "bytes": {"max_tensor_bytes": 1 << 20, "max_session_bytes": 2 << 20, "max_held_bytes": 3 << 20},
    }
    with contextlib.ExitStack() as stack:
        stubs = {}
        for key, transport in zones.items():
            policy, path = _zone(tmp_path_factory.mktemp(f"limits-{key}"), transport)
            log = tmp_path_factory.mktemp(f"limits-{key}-log") / "zone.log"
            stack.callback(stop_zone, start_zone(path, "embed-client", "client", log))
            target = policy.zone_endpoints("embed-client")["client"]
            channel = stack.enter_context(channel_as("client/runtime", target))
            stubs[key] = zone_pb2_grpc.ZoneStub(channel)
        yield stubs


def _tensor(nbytes: int) -> StoredTensor:
    return StoredTensor(pb.PLAIN, "float32", (nbytes // 4,), b"\0" * nbytes)


def _pull(stub: zone_pb2_grpc.ZoneStub, session: str, name: str) -> list[pb.TensorFrame]:
    return list(stub.PullTensor(zone_pb2.PullTensorRequest(session=session, name=name), timeout=10))


def test_an_idle_session_expires_with_its_tensors(runtime_stubs: dict[str, zone_pb2_grpc.ZoneStub]) -> None:
    """Tensors pushed and never released used to be held forever; a session idle for transport.session_idle_s is
    released, while one that calls keep coming to stays."""
    stub = runtime_stubs["idle"]
    push(stub, _tensor(400), "abandoned", "x", "client", timeout=10)
    push(stub, _tensor(400), "busy", "x", "client", timeout=10)
    assert len(stub.Records(zone_pb2.RecordsRequest(session="abandoned"), timeout=10).receipts) == 1
    start = time.monotonic()
    while stub.Records(zone_pb2.RecordsRequest(session="abandoned"), timeout=10).receipts:
        assert time.monotonic() - start < 15, "the idle session was not released"
        _pull(stub, "busy", "x")  # each call touches the busy session
        time.sleep(0.2)
    assert time.monotonic() - start >= 0.5  # not before it was idle
    with pytest.raises(grpc.RpcError) as e:
        _pull(stub, "abandoned", "x")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "session 'abandoned' expired after 1 s without calls" in e.value.details()
    assert stub.Release(zone_pb2.ReleaseRequest(session="abandoned"), timeout=10).freed_tensors == 0
    assert len(_pull(stub, "busy", "x")) == 3  # header, chunk, trailer: still held
    assert stub.Release(zone_pb2.ReleaseRequest(session="busy"), timeout=10).freed_tensors == 1


def test_pushes_past_the_byte_limits_are_refused(runtime_stubs: dict[str, zone_pb2_grpc.ZoneStub]) -> None:
    stub = runtime_stubs["bytes"]
    push(stub, _tensor(MB), "a", "x1", "client", timeout=10)
    push(stub, _tensor(MB), "a", "x2", "client", timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        push(stub, _tensor(MB), "a", "x3", "client", timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "session limit of 2097152 (transport.max_session_bytes)" in e.value.details()
    push(stub, _tensor(MB), "b", "x1", "client", timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        push(stub, _tensor(MB), "c", "x1", "client", timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 3145728 (transport.max_held_bytes)" in e.value.details()
    assert stub.Records(zone_pb2.RecordsRequest(session="c"), timeout=10).receipts == []
    assert stub.Release(zone_pb2.ReleaseRequest(session="a"), timeout=10).freed_tensors == 2
    push(stub, _tensor(MB), "c", "x1", "client", timeout=10)
    for s in ("b", "c"):
        assert stub.Release(zone_pb2.ReleaseRequest(session=s), timeout=10).freed_tensors == 1
