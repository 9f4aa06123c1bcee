"""Turns at the runtime: at most n runs at once, the rest wait, a release from any thread frees one."""

from __future__ import annotations

import threading
import time

import pytest

from orchestrator.runtime.turns import Turns


def test_n_turns_then_waiting_then_a_release_from_another_thread() -> None:
    turns = Turns(2)
    assert turns.acquire(blocking=False) and turns.acquire(timeout=0.1)
    assert turns.locked() and turns.taken == 2
    assert not turns.acquire(blocking=False)
    start = time.monotonic()
    assert not turns.acquire(timeout=0.2)
    assert 0.15 < time.monotonic() - start < 2
    threading.Timer(0.1, turns.release).start()
    assert turns.acquire(timeout=5)  # the other thread's release wakes this wait
    turns.release()
    turns.release()
    assert turns.taken == 0 and not turns.locked()


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one turn; got 0"):
        Turns(0)
    with pytest.raises(RuntimeError, match="released more turns than were taken"):
        Turns(1).release()
