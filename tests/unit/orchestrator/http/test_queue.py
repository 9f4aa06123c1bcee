"""The bounded first-come queue in front of the runtime: 429 past its length, order, deadline, a caller leaving."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.http.queue import CallerGone, QueueFull, QueueTimeout, RuntimeGate
from orchestrator.runtime.turns import Turns


async def never() -> bool:
    return False


def test_full_queue_refuses_and_waiters_go_in_order() -> None:
    async def main() -> list[str]:
        seen: list[tuple[int, int]] = []
        gate = RuntimeGate(Turns(1), max_waiting=2, on_change=lambda w, a: seen.append((w, a)))
        await gate.acquire(5, never)  # free: taken at once
        assert gate.active == 1 and gate.waiting == 0
        order: list[str] = []

        async def waiter(name: str) -> None:
            await gate.acquire(5, never)
            order.append(name)
            await asyncio.sleep(0.05)
            gate.release()

        tasks = [asyncio.create_task(waiter(n)) for n in ("a", "b")]
        await asyncio.sleep(0.05)
        assert gate.waiting == 2
        with pytest.raises(QueueFull):
            await gate.acquire(5, never)
        gate.release()
        await asyncio.gather(*tasks)
        assert gate.waiting == 0 and gate.active == 0 and not gate.lock.locked()
        assert (2, 1) in seen and seen[-1] == (0, 0)
        return order

    assert asyncio.run(main()) == ["a", "b"]


def test_a_zero_length_queue_still_serves_a_free_runtime() -> None:
    async def main() -> None:
        gate = RuntimeGate(Turns(1), max_waiting=0)
        await gate.acquire(1, never)
        with pytest.raises(QueueFull):
            await gate.acquire(1, never)
        gate.release()

    asyncio.run(main())


def test_deadline_and_caller_leaving_free_the_place() -> None:
    async def main() -> None:
        lock = Turns(1)
        lock.acquire()  # the gRPC service holds the runtime
        gate = RuntimeGate(lock, max_waiting=1)
        with pytest.raises(QueueTimeout):
            await gate.acquire(0.1, never)
        assert gate.waiting == 0

        async def gone() -> bool:
            return True

        with pytest.raises(CallerGone):
            await gate.acquire(5, gone)
        assert gate.waiting == 0
        lock.release()
        await gate.acquire(1, never)  # the runtime freed by the other front end
        gate.release()

    asyncio.run(main())


def test_as_many_requests_run_at_once_as_there_are_turns() -> None:
    async def main() -> None:
        gate = RuntimeGate(Turns(2), max_waiting=1)
        await gate.acquire(1, never)
        await gate.acquire(1, never)  # a second session at once
        assert gate.active == 2 and gate.lock.locked()
        with pytest.raises(QueueTimeout):
            await gate.acquire(0.1, never)  # the third waits for a turn
        gate.release()
        await gate.acquire(1, never)
        gate.release()
        gate.release()
        assert gate.active == 0 and not gate.lock.locked()

    asyncio.run(main())
