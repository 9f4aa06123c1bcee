"""Work that depends on no data (fresh masks, encryptions of zero), made ahead while a zone process serves no call.

A conversion between zones spends much of its time on such work: the HE zone encodes a fresh random mask per
ciphertext it sends to MPC (4.6 ms at N=2^14), the enclave encrypts every share it turns into a ciphertext
(7.4 ms). Made in the gaps between calls instead, each item is still used once and only once, so nothing about
the protocol changes but when the randomness is drawn.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from hsi.transport.activity import PROCESS_ACTIVITY, Activity

T = TypeVar("T")
log = logging.getLogger("hsi.precompute")

# Niceness of the threads that fill pools: when other processes on the machine (another zone's stage) want the
# cores, they get them.
FILLER_NICENESS = 10


class Precomputed(Generic[T]):
    """Up to `size` single-use values from `make`, made by a background thread while `activity` is idle; `take`
    hands each out once, and makes one on the spot when none is ready."""

    def __init__(self, make: Callable[[], T], size: int, name: str,
                 activity: Activity = PROCESS_ACTIVITY) -> None:
        self._make, self._size, self.name, self._activity = make, size, name, activity
        self._ready: deque[T] = deque()
        self._closed = False
        self.made_ahead = 0
        self.made_on_demand = 0
        self._thread = threading.Thread(target=self._fill, name=f"precompute-{name}", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def take(self) -> T:
        """A value no one else got: a ready one, or a new one."""
        with self._activity.changed:
            if self._ready:
                value = self._ready.popleft()
                self._activity.changed.notify_all()  # the filler may make another
                return value
        self.made_on_demand += 1
        return self._make()

    @property
    def ready(self) -> int:
        """Values made and not yet taken."""
        return len(self._ready)

    def _fill(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), FILLER_NICENESS)
        except OSError:  # not permitted: the filler still waits for idle moments
            pass
        changed = self._activity.changed
        while True:
            with changed:
                changed.wait_for(lambda: self._closed or (len(self._ready) < self._size and self._activity.idle))
                if self._closed:
                    return
            try:
                value = self._make()
            except Exception:  # e.g. the key was destroyed meanwhile; take() reports it when it makes its own
                log.exception("precomputing %s failed; values are made on demand from now on", self.name)
                return
            with changed:
                if self._closed:
                    return
                self._ready.append(value)
                self.made_ahead += 1

    def close(self, wait: float = 0.0) -> None:
        """Stop the filler and drop the values not taken; wait up to `wait` seconds for the filler to end."""
        with self._activity.changed:
            self._closed = True
            self._ready.clear()
            self._activity.changed.notify_all()
        if wait and self._thread is not threading.current_thread():
            self._thread.join(wait)


_LIVE: weakref.WeakSet[Precomputed[Any]] = weakref.WeakSet()


@atexit.register
def _stop_fillers() -> None:
    # A filler still inside native code (an OpenFHE encryption) when the interpreter tears down its extension
    # modules aborts the process ("terminate called without an active exception"): let each finish first.
    for pool in list(_LIVE):
        pool.close(wait=5.0)
