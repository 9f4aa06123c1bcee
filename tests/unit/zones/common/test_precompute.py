"""Values made ahead (zones.common.precompute): each handed out once, made only while the process serves no call,
made on the spot when none is ready; the server's interceptor counts the calls it serves."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from hsi.transport.activity import Activity
from hsi.transport.auth import AllowListInterceptor
from zones.common.precompute import Precomputed


def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_values_are_made_ahead_while_idle_and_handed_out_once() -> None:
    activity = Activity()
    counter = itertools.count()
    with activity.serving():
        pool = Precomputed(lambda: next(counter), 4, "test", activity)
        time.sleep(0.1)
        assert pool.ready == 0 and pool.made_ahead == 0  # busy: nothing is made in the background
        assert pool.take() == 0 and pool.made_on_demand == 1  # none ready: made on the spot
    _until(lambda: pool.ready == 4)
    time.sleep(0.05)
    assert pool.ready == 4 and pool.made_ahead == 4  # no more than `size`
    taken = [pool.take() for _ in range(6)]
    assert len(set(taken)) == 6 and 0 not in taken  # every value once
    _until(lambda: pool.ready == 4)  # refilled after the takes
    pool.close()
    assert pool.ready == 0
    assert pool.take() not in taken


def test_a_failing_maker_stops_the_filler_and_take_reports_it() -> None:
    activity = Activity()
    calls = itertools.count()

    def make() -> int:
        if next(calls) >= 1:
            raise RuntimeError("key destroyed")
        return 7

    pool = Precomputed(make, 3, "failing", activity)
    _until(lambda: not pool._thread.is_alive())
    assert pool.take() == 7
    with pytest.raises(RuntimeError, match="key destroyed"):
        pool.take()


class _Context:
    """What the interceptor reads of a gRPC server context: the caller's certificate name."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [b"owner/he"]}

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


def test_the_interceptor_counts_calls_in_progress_but_not_health_probes() -> None:
    activity = Activity()
    seen: list[bool] = []
    inside, release = threading.Event(), threading.Event()

    def behaviour(request: Any, context: Any) -> str:
        seen.append(activity.idle)
        inside.set()
        release.wait(5)
        return "done"

    interceptor = AllowListInterceptor({"/hsi.Zone/RunStage": frozenset({"owner/*"})}, activity)

    def details(method: str) -> Any:
        return type("Details", (), {"method": method, "invocation_metadata": ()})()

    handler = interceptor.intercept_service(lambda d: grpc.unary_unary_rpc_method_handler(behaviour),
                                            details("/hsi.Zone/RunStage"))
    # the interceptor serves every method as request-streaming, so it runs at call open
    call = threading.Thread(target=handler.stream_unary, args=(iter([None]), _Context()))
    call.start()
    assert inside.wait(5)
    assert not activity.idle
    release.set()
    call.join(5)
    assert activity.idle and seen == [False]
    probe = interceptor.intercept_service(lambda d: grpc.unary_unary_rpc_method_handler(behaviour),
                                          details("/grpc.health.v1.Health/Check"))
    inside.clear()
    probe.stream_unary(iter([None]), _Context())
    assert seen == [False, True]  # a health probe is no call the background work waits for
