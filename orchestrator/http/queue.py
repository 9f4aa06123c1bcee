"""The bounded first-come queue in front of the runtime, which runs up to `transport.max_sessions` sessions at once."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from orchestrator.runtime.turns import Turns

_POLL_S = 0.02  # how often a waiter looks whether its turn came, whether its caller left, whether its time ran out


class QueueFull(Exception):
    """No place left in the queue."""


class QueueTimeout(Exception):
    """The request's deadline passed while it waited for its turn."""


class CallerGone(Exception):
    """The caller disconnected while its request waited."""


class RuntimeGate:
    """The runtime's turns (shared with the gRPC service) with a bounded FIFO of HTTP requests waiting for one.

    A request takes a turn at once when one is free and nobody waits; otherwise it joins the queue,
    unless `max_waiting` requests already wait (QueueFull: the HTTP answer is 429).
    """

    def __init__(self, lock: Turns, max_waiting: int,
                 on_change: Callable[[int, int], None] = lambda waiting, active: None) -> None:
        self.lock = lock
        self.max_waiting = max_waiting
        self._waiters: deque[object] = deque()
        self._active = 0
        self._on_change = on_change

    @property
    def waiting(self) -> int:
        """How many requests wait for the runtime."""
        return len(self._waiters)

    @property
    def active(self) -> int:
        """How many sessions this gate let run and that have not ended."""
        return self._active

    def _changed(self) -> None:
        self._on_change(len(self._waiters), self._active)

    async def acquire(self, timeout_s: float, gone: Callable[[], Awaitable[bool]]) -> None:
        """Wait for the runtime's turn, first come first served; QueueFull, QueueTimeout or CallerGone."""
        busy = self.lock.locked() or bool(self._waiters)
        if busy and len(self._waiters) >= self.max_waiting:
            raise QueueFull(len(self._waiters))
        ticket = object()
        self._waiters.append(ticket)
        self._changed()
        end = time.monotonic() + timeout_s
        try:
            while True:
                if self._waiters[0] is ticket and self.lock.acquire(blocking=False):
                    self._active += 1
                    return
                if time.monotonic() > end:
                    raise QueueTimeout(f"waited {timeout_s:g} s for the runtime")
                if await gone():
                    raise CallerGone()
                await asyncio.sleep(_POLL_S)
        finally:
            self._waiters.remove(ticket)
            self._changed()

    def release(self) -> None:
        """End the turn (from any thread: the run's worker thread releases it when the run ends)."""
        self._active -= 1
        self.lock.release()
        self._changed()
