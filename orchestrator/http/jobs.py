"""One request's run: its turn at the runtime, a worker thread, token events, cancellation and its deadline."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from orchestrator.http.errors import CLIENT_GONE, ApiError, deadline, from_run_error, queue_full
from orchestrator.http.queue import CallerGone, QueueFull, QueueTimeout
from orchestrator.http.state import ApiState
from orchestrator.runtime import RunError, RunResult
from orchestrator.runtime.errors import ZONE_FAILURE

log = logging.getLogger(__name__)

Cancelled = Callable[[], bool]
OnToken = Callable[[int], None]
Work = Callable[[Cancelled, OnToken], RunResult]  # a runtime call: (cancelled, on_token) -> result
Gone = Callable[[], Awaitable[bool]]
_LOOK_S = 0.25  # how often a waiting request looks whether its caller left


async def _never_gone() -> bool:
    return False


class Job:
    """A runtime call on a worker thread once the gate gives it the runtime; token ids arrive as they are made."""

    def __init__(self, state: ApiState, work: Work, arrived: float | None = None) -> None:
        self.state = state
        self.work = work
        self.arrived = arrived or time.monotonic()
        self.end = self.arrived + state.settings.deadline_s
        self.result: RunResult | None = None
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self._cancel = threading.Event()
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    async def start(self, gone: Gone = _never_gone) -> None:
        """Wait for the runtime's turn (429 when the queue is full, 504 past the deadline), then start the run."""
        try:
            await self.state.gate.acquire(max(0.0, self.end - time.monotonic()), gone)
        except QueueFull as e:
            raise queue_full(int(e.args[0])) from None
        except QueueTimeout as e:
            raise deadline(f"the request's deadline ({self.state.settings.deadline_s:g} s) passed while it waited "
                           f"for the runtime: {e}") from None
        except CallerGone:
            raise ApiError(CLIENT_GONE, "the client disconnected while waiting", code="cancelled") from None
        self.state.metrics.queue_wait.observe(time.monotonic() - self.arrived)
        threading.Thread(target=self._run, name="hsi-http-run", daemon=True).start()

    def cancel(self) -> None:
        """Ask the run to stop at its next stage (the caller left, or the deadline passed)."""
        self._cancel.set()

    def _emit(self, kind: str, value: Any) -> None:
        self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))

    def _token(self, token: int) -> None:
        now = time.monotonic()
        self.first_token_at = self.first_token_at or now
        self.last_token_at = now
        self._emit("token", token)

    def _run(self) -> None:
        state = self.state
        try:
            result = self.work(self._cancel.is_set, self._token)
            state.forward_pass_ran = True
            state.metrics.run(result.metrics)
            state.metrics.runs.labels("ok").inc()
            self._emit("done", result)
        except RunError as e:
            down: list[str] = []
            if e.code in ZONE_FAILURE:
                down = state.health.down()
                state.runtime.reconnect()  # a zone may have restarted: new channels, stages loaded again
            cancelled = e.code == grpc.StatusCode.CANCELLED
            state.metrics.runs.labels("cancelled" if cancelled else "failed").inc()
            log.log(logging.INFO if cancelled else logging.WARNING, "run %s: %s",
                    "cancelled" if cancelled else "failed", e)
            self._emit("error", from_run_error(e, down))
        except Exception as e:  # the request answers 500 with it; the service goes on
            state.metrics.runs.labels("failed").inc()
            log.exception("run failed")
            self._emit("error", ApiError(500, f"internal error: {type(e).__name__}: {e}", type_="server_error"))
        finally:
            state.gate.release()

    async def next_token(self, gone: Gone = _never_gone) -> int | None:
        """The next token id, or None once the run ended (`self.result` is set). ApiError when the run failed or
        the deadline passed; a caller that left (`gone`) gets 499. Either way the run is cancelled."""
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(self._events.get(), _LOOK_S)
                except asyncio.TimeoutError:
                    if time.monotonic() > self.end:
                        raise deadline(f"the request's deadline ({self.state.settings.deadline_s:g} s) passed; "
                                       "the run was cancelled") from None
                    if await gone():
                        raise ApiError(CLIENT_GONE, "the client disconnected", code="cancelled") from None
                    continue
                if kind == "token":
                    return int(value)
                if kind == "done":
                    self.result = value
                    return None
                raise value
        except BaseException:  # ApiError, or the caller's task cancelled (a stream whose client left)
            self.cancel()
            raise

    async def tokens(self, gone: Gone = _never_gone) -> AsyncIterator[int]:
        """The token ids as they come, until the run ends (see `next_token`)."""
        while (token := await self.next_token(gone)) is not None:
            yield token

    async def run(self, gone: Gone = _never_gone) -> RunResult:
        """Start the run and wait for its result."""
        await self.start(gone)
        async for _ in self.tokens(gone):
            pass
        assert self.result is not None
        return self.result
