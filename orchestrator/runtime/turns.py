"""Turns at the runtime: at most `transport.max_sessions` runs at once, shared by the gRPC and HTTP services."""

from __future__ import annotations

import threading
import time


class Turns:
    """A counting lock with threading.Lock's calls: `acquire` takes one of `n` turns, `locked` says none is free."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"at least one turn; got {n}")
        self.n = n
        self._free = n
        self._changed = threading.Condition()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take a turn: at once, or waiting (up to `timeout` seconds when it is not negative); whether it was got."""
        end = None if timeout < 0 else time.monotonic() + timeout
        with self._changed:
            while self._free == 0:
                if not blocking:
                    return False
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
            self._free -= 1
            return True

    def release(self) -> None:
        """Give a turn back (from any thread)."""
        with self._changed:
            if self._free == self.n:
                raise RuntimeError("released more turns than were taken")
            self._free += 1
            self._changed.notify()

    def locked(self) -> bool:
        """Whether every turn is taken."""
        with self._changed:
            return self._free == 0

    @property
    def taken(self) -> int:
        """How many turns are taken."""
        with self._changed:
            return self.n - self._free
