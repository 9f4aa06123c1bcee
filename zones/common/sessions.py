"""The tensors a zone process holds per session, with the receipts of what it received, bounded and expiring."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from hsi.transport.shares import ShareAssembler
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import zone_pb2

log = logging.getLogger("hsi.zone")

RECEIPT_BYTES = 256  # what a receipt is counted as against the byte limits (its fields and the list's slot)
_EXPIRED_KEPT = 1024  # ids of expired sessions remembered, so a late call is told why its tensors are gone
_REAP_MAX_S = 30.0  # the reaper looks at least this often (and 4 times per idle_s when that is shorter)


@dataclass
class Session:
    """One session's state in a zone process."""

    tensors: dict[str, StoredTensor] = field(default_factory=dict)
    receipts: list[zone_pb2.Receipt] = field(default_factory=list)
    shares: ShareAssembler = field(default_factory=ShareAssembler)
    pieces: dict[str, list[Any]] = field(default_factory=dict)  # mpc->he: ciphertext and mask (MaskingEngine.piece)
    parked: dict[str, int] = field(default_factory=dict)  # bytes of the shares and pieces waiting for the rest
    reserved: int = 0  # bytes of pushes under way
    active: int = 0  # calls using the session now: it does not expire under them
    touched: float = 0.0  # time.monotonic() of the last call

    @property
    def held_bytes(self) -> int:
        """What the session counts against the limits: its tensors, parked pieces, receipts, pushes under way."""
        return (sum(len(t.data) for t in self.tensors.values()) + sum(self.parked.values())
                + RECEIPT_BYTES * len(self.receipts) + self.reserved)


class SessionStore:
    """Sessions by id, behind one lock; a zone's RPCs and its enclave's key service share it.

    Limits on held state:
    - `idle_s`: a session no call has touched for this long, and that no call is using, is released: its
      tensors and receipts dropped and `on_expire(sid)` called (the zone frees the engine's per-session state).
      A daemon reaper checks every min(idle_s / 4, 30) s, and each push checks first. None: never.
    - `max_session_bytes` / `max_held_bytes`: a push whose declared size would take the session's, or the whole
      store's, held bytes (tensors, parked shares and pieces, RECEIPT_BYTES per receipt, pushes under way) past
      the limit is refused with RESOURCE_EXHAUSTED before its body is read. A stage's outputs are always kept
      (they count towards later pushes). None: no limit.
    """

    def __init__(self, zone: str, idle_s: float | None = None, max_session_bytes: int | None = None,
                 max_held_bytes: int | None = None, on_expire: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.zone = zone
        self.idle_s, self.max_session_bytes, self.max_held_bytes = idle_s, max_session_bytes, max_held_bytes
        self._on_expire, self._clock = on_expire, clock
        self._sessions: dict[str, Session] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        if idle_s is not None:
            self._reaper = threading.Thread(target=self._reap, args=(min(max(idle_s / 4, 0.05), _REAP_MAX_S),),
                                            name=f"hsi-reaper-{zone}", daemon=True)
            self._reaper.start()

    # -- lookups and use --------------------------------------------------------------------------------------

    def _get(self, sid: str, create: bool) -> Session | None:
        """The session (created if asked), touched; call with the lock held."""
        if not sid:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, "session id is empty")
        s = self._sessions.get(sid)
        if s is None and create:
            s = self._sessions[sid] = Session()
            self._expired.pop(sid, None)
        if s is not None:
            s.touched = self._clock()
        return s

    def session(self, sid: str) -> Session:
        """The session `sid`, created on first use; INVALID_ARGUMENT for an empty id."""
        with self.lock:
            s = self._get(sid, True)
            assert s is not None
            return s

    @contextmanager
    def using(self, sid: str, create: bool = True) -> Iterator[Session]:
        """The session, kept from expiring while the block runs; without `create`, an unknown session is an empty
        one that is not stored (a call on it keeps nothing)."""
        with self.lock:
            s = self._get(sid, create) or Session()
            s.active += 1
        try:
            yield s
        finally:
            with self.lock:
                s.active -= 1
                s.touched = self._clock()

    @contextmanager
    def receiving(self, sid: str, name: str, nbytes: int) -> Iterator[Session]:
        """The session while a push of `nbytes` arrives and is kept, its bytes reserved; RESOURCE_EXHAUSTED (and
        nothing created) when they would take the session or the store past its limit."""
        self.expire()
        with self.lock:
            s = self._get(sid, False)
            mine = s.held_bytes if s else 0
            if self.max_session_bytes is not None and mine + nbytes > self.max_session_bytes:
                raise ZoneError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"zone {self.zone!r} holds {mine} bytes for session {sid!r}; tensor {name!r} of "
                                f"{nbytes} bytes would pass the session limit of {self.max_session_bytes} "
                                "(transport.max_session_bytes): release tensors or the session first")
            total = sum(x.held_bytes for x in self._sessions.values())
            if self.max_held_bytes is not None and total + nbytes > self.max_held_bytes:
                raise ZoneError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"zone {self.zone!r} holds {total} bytes over all sessions; tensor {name!r} of "
                                f"{nbytes} bytes would pass its limit of {self.max_held_bytes} "
                                "(transport.max_held_bytes)")
            s = self._get(sid, True)
            assert s is not None
            s.reserved += nbytes
            s.active += 1
        try:
            yield s
        finally:
            with self.lock:
                s.reserved -= nbytes
                s.active -= 1
                s.touched = self._clock()

    def gone(self, sid: str) -> str:
        """A note for a message about a missing tensor: why the session holds nothing, if it expired."""
        with self.lock:
            expired = sid in self._expired
        return f" (session {sid!r} expired after {self.idle_s:g} s without calls)" if expired else ""

    def held(self, sid: str, name: str) -> StoredTensor:
        """A tensor the session holds; NOT_FOUND naming it when absent."""
        with self.lock:
            s = self._get(sid, False)
            t = s.tensors.get(name) if s else None
        if t is None:
            raise ZoneError(grpc.StatusCode.NOT_FOUND,
                            f"zone {self.zone!r} holds no tensor {name!r} for session {sid!r}{self.gone(sid)}")
        return t

    # -- keeping and freeing ----------------------------------------------------------------------------------

    def keep(self, sid: str, tensors: dict[str, StoredTensor]) -> None:
        """Hold `tensors` for the session."""
        with self.lock:
            s = self._get(sid, True)
            assert s is not None
            s.tensors.update(tensors)

    def park(self, session: Session, name: str, add: Callable[[], Any], nbytes: int) -> Any:
        """Run `add` (it files one share or piece of `name` in `session`) under the lock, counting `nbytes` as
        parked until `add` returns what completes `name` (anything but None)."""
        with self.lock:
            done = add()
            if done is None:
                session.parked[name] = session.parked.get(name, 0) + nbytes
            else:
                session.parked.pop(name, None)
            return done

    def drop(self, sid: str, names: Iterable[str]) -> int:
        """Free the session's tensors `names` (their last use in this zone is over); the bytes still held."""
        with self.lock:
            s = self._get(sid, False)
            if s is None:
                return 0
            for name in names:
                s.tensors.pop(name, None)
            return sum(len(t.data) for t in s.tensors.values())

    def record(self, receipt: zone_pb2.Receipt) -> None:
        """Keep the receipt of a tensor the zone (or its enclave's key service) received."""
        with self.lock:
            s = self._get(receipt.session, True)
            assert s is not None
            s.receipts.append(receipt)

    def receipts(self, sid: str) -> list[zone_pb2.Receipt]:
        """The receipts of a session (none for an unknown one)."""
        with self.lock:
            s = self._sessions.get(sid)
            return list(s.receipts) if s else []

    def pop(self, sid: str) -> Session | None:
        """Forget a session; what it held, if anything."""
        with self.lock:
            return self._sessions.pop(sid, None)

    # -- expiry ---------------------------------------------------------------------------------------------

    def expire(self) -> list[str]:
        """Release the sessions idle for longer than `idle_s` and not in use; their ids."""
        if self.idle_s is None:
            return []
        with self.lock:
            now = self._clock()
            ids = [sid for sid, s in self._sessions.items() if not s.active and now - s.touched > self.idle_s]
            for sid in ids:
                del self._sessions[sid]
                self._expired[sid] = None
            while len(self._expired) > _EXPIRED_KEPT:
                self._expired.popitem(last=False)
        for sid in ids:
            log.info("zone %s: session %s expired after %g s without calls", self.zone, sid, self.idle_s)
            if self._on_expire is not None:
                try:
                    self._on_expire(sid)
                except Exception:  # the reaper must go on; the engine's failure is the zone log's to show
                    log.exception("zone %s: releasing expired session %s failed", self.zone, sid)
        return ids

    def _reap(self, period: float) -> None:
        while not self._stop.wait(period):
            self.expire()

    def close(self) -> None:
        """Stop the reaper."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
