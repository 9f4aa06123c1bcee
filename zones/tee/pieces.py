"""The enclave's half-received mpc->he conversions: every MPC party's ring share of a tensor, kept until all came,
then summed inside the enclave (the bounded value y - s exists nowhere else)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

MAX_PENDING = 256             # tensors whose shares are partly in, across sessions
MAX_PENDING_BYTES = 2 << 30   # their shares' bytes together


class PieceError(ValueError):
    """A share that does not fit the others of its tensor."""


class PiecesFull(PieceError):
    """More partly received conversions than the enclave holds."""


@dataclass
class _Pending:
    form: tuple[int, int, tuple[int, ...]]  # share count, fixed-point precision, shape
    parts: dict[int, NDArray[np.int64]] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)

    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts.values())


class Pieces:
    """Shares of mpc->he conversions by (session, tensor), dropped when complete or after `ttl_s`."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._lock = threading.Lock()

    def add(self, session: str, name: str, index: int, count: int, precision: int, share: NDArray[np.int64]
            ) -> NDArray[np.int64] | None:
        """Keep share `index` of `count` (at `precision` fractional bits); the ring sum of all of them once this
        was the last, else None."""
        with self._lock:
            self._expire()
            key = (session, name)
            entry = self._pending.get(key)
            if entry is None:
                if len(self._pending) >= MAX_PENDING or self._held() + share.nbytes > MAX_PENDING_BYTES:
                    raise PiecesFull(f"the enclave holds {len(self._pending)} partly received conversions "
                                     f"({self._held()} bytes); no more until they complete or expire")
                entry = self._pending[key] = _Pending((count, precision, tuple(share.shape)))
            form = (count, precision, tuple(share.shape))
            if form != entry.form:
                raise PieceError(f"share {index} of {name!r} came as one of (count, precision, shape) {form}; the "
                                 f"first as one of {entry.form}")
            if index in entry.parts:
                raise PieceError(f"share {index} of {name!r} in session {session[:12]} came twice")
            entry.parts[index] = share
            if len(entry.parts) < count:
                return None
            del self._pending[key]
        total = np.zeros(form[2], dtype="<i8")
        with np.errstate(over="ignore"):
            for part in entry.parts.values():
                total += part  # wraps around the ring, as the shares do
        return total

    def _held(self) -> int:
        return sum(e.nbytes() for e in self._pending.values())

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, e in self._pending.items() if now - e.since > self.ttl_s]:
            del self._pending[key]
