"""Weight masks kept between sessions: a compute party's share of each linear weight's Beaver mask b with the
opened W - b, and the dealer's b, so that a later session opens no weight.

Reuse is as safe as reuse within a session (`fixed_weights`): W - b is opened once per b, and every call masks
its input with a fresh a. Every entry names the session that drew it; the parties and the dealer reuse their
entries only when all of them hold the same entries from the same sessions (`agree`), otherwise the session
draws every mask afresh, so a party or dealer that restarted, or two concurrent sessions that each added
entries, cost one opening of the weights, never a wrong result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

ELEMENT_BYTES = 8  # an int64 ring element: what the limit counts, identically at every party and the dealer


@dataclass(frozen=True)
class Entry:
    """One weight's kept mask: `mask` is a party's share of b (the dealer's: b itself), `masked` the public
    W - b (None at the dealer), `origin` the session that drew b."""

    origin: str
    mask: np.ndarray
    masked: np.ndarray | None = None


@dataclass
class WeightMasks:
    """The masks one party (or the dealer) of an MPC zone keeps, up to `limit_bytes` of b (8 bytes an element)."""

    limit_bytes: int
    entries: dict[str, Entry] = field(default_factory=dict)

    def digest(self) -> bytes:
        """What the parties and the dealer compare: the kept weights' keys and the sessions that drew them."""
        h = hashlib.sha256()
        for key in sorted(self.entries):
            h.update(f"{key}\0{self.entries[key].origin}\0".encode())
        return h.digest()

    def used_bytes(self) -> int:
        """The bytes of b the entries count against the limit."""
        return sum(e.mask.size * ELEMENT_BYTES for e in self.entries.values())

    def keep(self, key: str, entry: Entry) -> bool:
        """Keep `entry` under `key` if it fits the limit (the same decision at every party and the dealer)."""
        if self.used_bytes() + entry.mask.size * ELEMENT_BYTES > self.limit_bytes:
            return False
        self.entries[key] = entry
        return True


@dataclass(frozen=True)
class SessionMasks:
    """What a session's worker gives back to its zone: the masks it started from (their digest), whether it drew
    them all afresh, and the entries it added."""

    start: bytes
    reset: bool
    added: dict[str, Entry]


class MaskTracker:
    """A worker's view of its zone's kept masks during one session."""

    def __init__(self, kept: WeightMasks) -> None:
        self.kept = WeightMasks(kept.limit_bytes, dict(kept.entries))  # the zone's own stays as it was
        self.start = kept.digest()
        self.reset = False
        self.added: dict[str, Entry] = {}
        self.agreed: bool | None = None  # decided at the session's first weight (compute parties)
        self.tell_dealer = False  # party 0: the dealer must drop its entries too (with the next mask it draws)

    def drop_all(self) -> None:
        """The session draws every mask afresh: nothing kept is used, and the zone replaces its entries."""
        self.kept = WeightMasks(self.kept.limit_bytes)
        self.reset = True
        self.tell_dealer = True
        self.added.clear()

    def add(self, key: str, entry: Entry) -> None:
        """Keep a mask drawn in this session, if it fits."""
        if self.kept.keep(key, entry):
            self.added[key] = entry

    def result(self) -> SessionMasks:
        """The session's outcome for the zone."""
        return SessionMasks(self.start, self.reset, dict(self.added))


def merge(zone: WeightMasks, outcome: SessionMasks) -> WeightMasks:
    """The zone's kept masks after a session ended cleanly: its outcome applies only if nothing changed them since
    the session started (another session's outcome may have; then the next agreement fails and starts afresh)."""
    if zone.digest() != outcome.start:
        return zone
    entries = {} if outcome.reset else dict(zone.entries)
    out = WeightMasks(zone.limit_bytes, entries)
    for key, entry in outcome.added.items():
        out.keep(key, entry)
    return out
