"""Limits on what a zone holds: idle sessions expire with their engine state, pushes past the byte limits are refused."""

from __future__ import annotations

import time

import grpc
import pytest

from hsi.policy.schema import Deadlines, Transport
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from protos import zone_pb2
from zones.common.sessions import RECEIPT_BYTES, SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _t(n: int) -> StoredTensor:
    return StoredTensor(pb.PLAIN, "float32", (n // 4,), b"\0" * n)


def test_idle_sessions_expire_with_their_engine_state() -> None:
    clock, released = Clock(), list[str]()
    store = SessionStore("z", idle_s=10, on_expire=released.append, clock=clock)
    try:
        store.keep("a", {"x": _t(8)})
        store.keep("b", {"x": _t(8)})
        clock.now += 6
        assert store.held("b", "x")  # a call touches b
        clock.now += 6
        assert store.expire() == ["a"] and released == ["a"]
        with pytest.raises(ZoneError, match="session 'a' expired after 10 s without calls") as e:
            store.held("a", "x")
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        assert store.receipts("a") == [] and store.pop("a") is None
        with store.using("b"):  # a session in use does not expire, however long the call takes
            clock.now += 100
            assert store.expire() == []
        clock.now += 5
        assert store.expire() == []  # the call's end touched it
        clock.now += 6
        assert store.expire() == ["b"]
        store.keep("a", {"y": _t(8)})  # a new session of the same id starts clean
        assert store.gone("a") == ""
    finally:
        store.close()


def test_the_reaper_expires_sessions_without_any_call() -> None:
    released: list[str] = []
    store = SessionStore("z", idle_s=0.2, on_expire=released.append)
    try:
        store.keep("a", {"x": _t(8)})
        end = time.monotonic() + 5
        while not released and time.monotonic() < end:
            time.sleep(0.05)
        assert released == ["a"] and store.pop("a") is None
    finally:
        store.close()


def test_a_failing_engine_release_does_not_stop_expiry() -> None:
    clock = Clock()

    def fail(sid: str) -> None:
        raise RuntimeError("engine broke")

    store = SessionStore("z", idle_s=1, on_expire=fail, clock=clock)
    store.keep("a", {})
    store.keep("b", {})
    clock.now += 2
    assert sorted(store.expire()) == ["a", "b"]
    store.close()


def test_pushes_past_the_session_limit_are_refused() -> None:
    store = SessionStore("z", max_session_bytes=1000, max_held_bytes=1500)
    with store.receiving("a", "x", 600):
        store.keep("a", {"x": _t(600)})
    with pytest.raises(ZoneError, match="holds 600 bytes for session 'a'; tensor 'y' of 401 bytes") as e:
        with store.receiving("a", "y", 401):
            pass
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    with store.receiving("a", "y", 400):  # exactly the limit
        with pytest.raises(ZoneError, match="session limit of 1000"):  # the push under way is counted
            with store.receiving("a", "z", 4):
                pass
    store.drop("a", ["x"])
    with store.receiving("a", "y", 400):
        pass


def test_pushes_past_the_zone_limit_are_refused_and_create_nothing() -> None:
    store = SessionStore("z", max_session_bytes=1000, max_held_bytes=1500)
    store.keep("a", {"x": _t(800)})
    store.keep("b", {"x": _t(600)})
    with pytest.raises(ZoneError, match="holds 1400 bytes over all sessions; tensor 'x' of 200 bytes") as e:
        with store.receiving("c", "x", 200):
            pass
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert store.pop("c") is None
    store.record(zone_pb2.Receipt(session="b", name="x"))  # receipts count too
    with pytest.raises(ZoneError):
        with store.receiving("c", "x", 100 - RECEIPT_BYTES + 1):
            pass
    store.pop("a")
    with store.receiving("c", "x", 200):
        pass


def test_parked_shares_count_until_their_tensor_completes() -> None:
    store = SessionStore("z", max_session_bytes=1000)
    s = store.session("a")
    assert store.park(s, "x", lambda: None, 600) is None
    with pytest.raises(ZoneError):
        with store.receiving("a", "y", 500):
            pass
    assert store.park(s, "x", lambda: _t(8), 600) is not None
    assert s.held_bytes == 0
    with store.receiving("a", "y", 900):
        pass


def test_policy_defaults_of_the_limits() -> None:
    t = Transport()
    assert t.idle_s == 2 * t.deadlines.stage_s == 1200
    assert t.session_bytes == 2 << 30 and t.held_bytes == 4 << 30
    t = Transport(session_idle_s=5, max_session_bytes=3 << 20, max_held_bytes=9 << 20,
                  deadlines=Deadlines(stage_s=60))
    assert (t.idle_s, t.session_bytes, t.held_bytes) == (5, 3 << 20, 9 << 20)
