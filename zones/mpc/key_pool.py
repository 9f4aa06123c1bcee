"""DCF keys dealt ahead of time: a party's pool of comparison keys, filled when a session ends (after its result
went out) and drawn on by the zone's next session, so that its comparisons wait for no dealer.

A key must never serve twice (two openings x + r, x' + r with the same r give x - x'). So a pool has one owner at a
time: the zone hands it to the next session and keeps nothing (`take`); the session uses each key once, in order,
and at its clean end gives the zone a new pool; a session that fails loses its pool. The parties use their pools
only when both hold the same one at the same position (`PoolState.agree`), otherwise they deal online.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class KeyPool:
    """A party's dealt comparison keys: its share of each r, its start seeds, and the words the dealer sent
    (the correction words, then its share of r's top bit), from the session `origin`."""

    origin: str
    r: np.ndarray       # (N,) int64
    seeds: np.ndarray   # (N, 2) int64
    words: np.ndarray   # (N, W + 1) int64
    used: int = 0

    def remaining(self) -> int:
        """Keys not used yet."""
        return len(self.r) - self.used

    def digest(self) -> bytes:
        """What the parties compare: which pool, how large, and how far used."""
        return hashlib.sha256(f"{self.origin}\0{len(self.r)}\0{self.used}".encode()).digest()

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next `n` keys (r shares, seeds, words), used up."""
        if n > self.remaining():
            raise ValueError(f"{n} keys asked of a pool with {self.remaining()} left")
        s = slice(self.used, self.used + n)
        self.used += n
        return self.r[s], self.seeds[s], self.words[s]


EMPTY = hashlib.sha256(b"no pool").digest()


class PoolState:
    """One session's use of its pool at one party: agreement at the first comparison, keys handed out once, and
    how many comparison elements the session took from DCF keys (the next pool holds the most of this and the
    pool it was given, up to `limit`: enough for the largest recent request)."""

    def __init__(self, pool: KeyPool | None, limit: int) -> None:
        self.pool = pool
        self.limit = limit
        self.given = len(pool.r) if pool is not None else 0
        self.agreed: bool | None = None
        self.consumed = 0

    def agree(self, all_same: Callable[[bytes], bool]) -> None:
        """Keep the pool only if every party holds the same one (`all_same` exchanges digests: one round)."""
        digest = self.pool.digest() if self.pool is not None else EMPTY
        self.agreed = all_same(digest) and self.pool is not None
        if not self.agreed:
            self.pool = None

    def keys(self, n: int, all_same: Callable[[bytes], bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """`n` keys from the pool, or None: deal them online (no pool, too few left, or the parties disagree)."""
        self.consumed += n
        if self.limit <= 0:
            return None
        if self.agreed is None:
            self.agree(all_same)
        if self.pool is None or self.pool.remaining() < n:
            return None
        return self.pool.take(n)

    def refill_size(self) -> int:
        """How many keys to deal for the zone's next session: the most of what this one took and what it was given,
        up to the limit; none when it compared nothing by DCF."""
        return min(max(self.consumed, self.given), self.limit) if self.limit > 0 and self.consumed else 0
