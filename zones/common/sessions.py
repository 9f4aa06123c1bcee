"""The tensors a zone process holds per session, with the receipts of what it received."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from hsi.transport.shares import ShareAssembler
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import zone_pb2


@dataclass
class Session:
    """One session's state in a zone process."""

    tensors: dict[str, StoredTensor] = field(default_factory=dict)
    receipts: list[zone_pb2.Receipt] = field(default_factory=list)
    shares: ShareAssembler = field(default_factory=ShareAssembler)
    pieces: dict[str, list[Any]] = field(default_factory=dict)  # mpc->he: ciphertext and mask (MaskingEngine.piece)


class SessionStore:
    """Sessions by id, behind one lock; a zone's RPCs and its enclave's key service share it."""

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self._sessions: dict[str, Session] = {}
        self.lock = threading.Lock()

    def session(self, sid: str) -> Session:
        """The session `sid`, created on first use; INVALID_ARGUMENT for an empty id."""
        if not sid:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, "session id is empty")
        with self.lock:
            return self._sessions.setdefault(sid, Session())

    def held(self, sid: str, name: str) -> StoredTensor:
        """A tensor the session holds; NOT_FOUND naming it when absent."""
        t = self.session(sid).tensors.get(name)
        if t is None:
            raise ZoneError(grpc.StatusCode.NOT_FOUND,
                            f"zone {self.zone!r} holds no tensor {name!r} for session {sid!r}")
        return t

    def keep(self, sid: str, tensors: dict[str, StoredTensor]) -> None:
        """Hold `tensors` for the session."""
        session = self.session(sid)
        with self.lock:
            session.tensors.update(tensors)

    def drop(self, sid: str, names: Iterable[str]) -> int:
        """Free the session's tensors `names` (their last use in this zone is over); the bytes still held."""
        session = self.session(sid)
        with self.lock:
            for name in names:
                session.tensors.pop(name, None)
            return sum(len(t.data) for t in session.tensors.values())

    def record(self, receipt: zone_pb2.Receipt) -> None:
        """Keep the receipt of a tensor the zone (or its enclave's key service) received."""
        session = self.session(receipt.session)
        with self.lock:
            session.receipts.append(receipt)

    def receipts(self, sid: str) -> list[zone_pb2.Receipt]:
        """The receipts of a session (none for an unknown one)."""
        with self.lock:
            s = self._sessions.get(sid)
            return list(s.receipts) if s else []

    def pop(self, sid: str) -> Session | None:
        """Forget a session; what it held, if anything."""
        with self.lock:
            return self._sessions.pop(sid, None)
