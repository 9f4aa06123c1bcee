"""No client can starve a zone: calls are admitted or refused as they open, each principal's open calls are
bounded, calls that stop sending time out, and health answers within a second whatever clients do."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hsi.transport.certs import issue
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from protos import zone_pb2, zone_pb2_grpc
from tests.integration.conftest import Deployment, minilm_cosine
from tests.support.tensors import channel_as, tensor_frames

TEXT = "Discharge summary: blood pressure well controlled on amlodipine; continue the current dose."
ZONE = "plain-owner"


def _target(d: Deployment) -> str:
    return d.policy.zone_endpoints(ZONE)["owner"]


def _health_latency(d: Deployment) -> float:
    with channel_as("client/runtime", _target(d)) as ch:
        start = time.monotonic()
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return time.monotonic() - start


class Hanging:
    """Calls opened as `principal` that never finish sending: unary calls with no request message, and tensor
    streams that stop after their header. `release()` lets the clients' request threads end."""

    def __init__(self, d: Deployment, principal: str) -> None:
        issue(d.certs, principal, ["127.0.0.1"])
        self._channel = channel_as(principal, _target(d))
        self.ch = self._channel.__enter__()
        self.stop = threading.Event()
        self.calls: list[Any] = []

    def _silent(self) -> Iterator[Any]:
        self.stop.wait(120)
        return
        yield  # a generator that sends nothing until released

    def _header_only(self) -> Iterator[pb.TensorFrame]:
        t = StoredTensor(pb.PLAIN, "float32", (1024,), b"\0" * 4096)
        yield next(iter(tensor_frames(t, "stall", "embeddings.LayerNorm", "client")))
        self.stop.wait(120)

    def open(self, unary: int, streams: int) -> None:
        """Open `unary` RunStage calls that send no request and `streams` PushTensor streams stalled after a
        header (a unary method is opened as a stream: on the wire the call has only its headers)."""
        run = self.ch.stream_unary("/hsi.v1.Zone/RunStage", request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=zone_pb2.RunStageReply.FromString)
        push = self.ch.stream_unary("/hsi.v1.Zone/PushTensor", request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=zone_pb2.PushTensorReply.FromString)
        self.calls += [run.future(self._silent(), timeout=90) for _ in range(unary)]
        self.calls += [push.future(self._header_only(), timeout=90) for _ in range(streams)]

    def codes(self, timeout: float) -> list[grpc.StatusCode | None]:
        """The status of every call that ended within `timeout` (None: still open)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not all(c.done() for c in self.calls):
            time.sleep(0.05)
        return [c.code() if c.done() else None for c in self.calls]

    def release(self) -> None:
        self.stop.set()
        for c in self.calls:
            c.cancel()
        self._channel.__exit__(None, None, None)


def test_an_unlisted_principal_is_refused_as_its_calls_open(plain_minilm: Deployment) -> None:
    mallory = Hanging(plain_minilm, "mallory/x")
    try:
        mallory.open(unary=24, streams=24)  # more than the server's 16-thread pool of before
        codes = mallory.codes(timeout=10)
        assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 48, codes
        assert _health_latency(plain_minilm) < 1.0
        rt = plain_minilm.runtime()
        try:
            assert minilm_cosine(rt.embed(TEXT).output["embedding"], TEXT) > 0.9999
        finally:
            rt.close()
    finally:
        mallory.release()


def test_a_listed_principals_stalled_streams_are_bounded_and_time_out(plain_minilm: Deployment) -> None:
    # client/embed-client is the planned sender of plaintext to the owner's zone: allowed to push, not to stall
    sender = Hanging(plain_minilm, "client/embed-client")
    try:
        sender.open(unary=0, streams=20)
        time.sleep(2)
        early = sender.codes(timeout=0)
        assert early.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4 and early.count(None) == 16, early
        assert _health_latency(plain_minilm) < 1.0
        with channel_as("client/runtime", _target(plain_minilm)) as ch:  # another principal's calls go on
            assert zone_pb2_grpc.ZoneStub(ch).Records(zone_pb2.RecordsRequest(session="x"), timeout=5) is not None
        idle_s = plain_minilm.policy.transport.stream_idle_s
        late = sender.codes(timeout=idle_s + 10)
        assert late.count(grpc.StatusCode.CANCELLED) == 16, late  # cut off after idle_s without a message
        rt = plain_minilm.runtime()  # and the sender's own slots are free again
        try:
            assert minilm_cosine(rt.embed(TEXT).output["embedding"], TEXT) > 0.9999
        finally:
            rt.close()
    finally:
        sender.release()


def test_soak_health_and_embeddings_go_on_under_stalled_calls(plain_minilm: Deployment) -> None:
    mallory = Hanging(plain_minilm, "mallory/soak")
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            latencies.append(_health_latency(plain_minilm))
            time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        mallory.open(unary=64, streams=64)
        rt = plain_minilm.runtime()
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:  # bounded: six embeddings, two at a time
                cosines = list(pool.map(lambda _: minilm_cosine(rt.embed(TEXT).output["embedding"], TEXT), range(6)))
        finally:
            rt.close()
        assert min(cosines) > 0.9999
        assert all(c is not None for c in mallory.codes(timeout=10))
    finally:
        stop.set()
        prober.join(10)
        mallory.release()
    assert latencies and max(latencies) < 1.0, max(latencies)


@pytest.fixture(scope="module")
def plain_minilm(hsi_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """plain-minilm with a short idle timeout, so a stalled call is cut off within the test."""
    from tests.integration.conftest import deployment

    yield from deployment("plain-minilm.yaml", tmp_path_factory, transport={"stream_idle_s": 5.0})
