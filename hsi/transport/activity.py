"""The calls a process is serving, counted by its servers, so background work can wait for idle moments."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class Activity:
    """The calls a process is serving; background precomputation waits until it serves none."""

    def __init__(self) -> None:
        self._serving = 0
        self.changed = threading.Condition()  # notified when a call ends (fillers wait on it)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Count one call in progress for the duration of the block."""
        with self.changed:
            self._serving += 1
        try:
            yield
        finally:
            with self.changed:
                self._serving -= 1
                self.changed.notify_all()

    @property
    def idle(self) -> bool:
        """Whether no call is in progress."""
        return self._serving == 0


PROCESS_ACTIVITY = Activity()  # every server of this process counts its calls here (see auth.AllowListInterceptor)
