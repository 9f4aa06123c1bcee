"""The key service's audit log writer: append-only JSON lines, each hash-chained to the previous and fsynced."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import BinaryIO

from hsi.audit import GENESIS, AuditRecord, parse_record, read_log, verify_records


class AuditError(ValueError):
    """The log cannot be appended to (not intact, cut short, replaced, unwritable): the key service fails closed."""


class AuditLog:
    """Appends records; every append is flushed and fsynced before the call it records proceeds.

    The log is read once, at start; the last record's index and hash and the file's length are then kept in
    memory. Every append takes the file lock and, when the file grew meanwhile (another process appended),
    reads and checks only what was added since the known length; it never searches back for the last record.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._offset = 0  # bytes of the file read and checked
        self._lines = 0
        self._index = -1  # of the last record
        self._hash = GENESIS  # of the last record
        self._inode: tuple[int, int] | None = None
        with self._lock, self._locked() as f:
            self._catch_up(f)

    def _locked(self) -> BinaryIO:
        try:
            f = open(self.path, "a+b")  # closed by the caller's with
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:
            raise AuditError(f"audit log {self.path} cannot be opened: {e.strerror}") from None
        return f

    def _catch_up(self, f: BinaryIO) -> None:
        """Read and check the records appended since `_offset` (all of them the first time)."""
        st = os.fstat(f.fileno())
        if self._inode is not None and (st.st_dev, st.st_ino) != self._inode:
            raise AuditError(f"audit log {self.path} was replaced since this enclave opened it; refusing to append")
        self._inode = (st.st_dev, st.st_ino)
        if st.st_size < self._offset:
            raise AuditError(f"audit log {self.path} shrank from {self._offset} to {st.st_size} bytes since this "
                             "enclave read it; refusing to append")
        if st.st_size == self._offset:
            return
        f.seek(self._offset)
        offset, lines, index, last = self._offset, self._lines, self._index, self._hash
        for raw in f:
            lines += 1
            where = f"{self.path}:{lines}"
            if not raw.endswith(b"\n"):
                raise AuditError(f"audit log {where} is incomplete (a torn write); refusing to append")
            try:
                rec = parse_record(raw.decode("utf-8", errors="replace"), where)
            except ValueError as e:
                raise AuditError(f"audit log is not intact, refusing to append: {e}") from None
            problems = verify_records([rec], start=index + 1, prev=last)
            if problems:
                raise AuditError(f"audit log {self.path} is not intact, refusing to append: {problems[0]}")
            offset, index, last = offset + len(raw), rec.index, rec.hash
        self._offset, self._lines, self._index, self._hash = offset, lines, index, last

    def append(self, principal: str, operation: str, key: str, session: str, decision: str,
               reason: str) -> AuditRecord:
        """Append one record (text fields bounded, see hsi.audit.FIELD_LIMITS) chained to the log's last record,
        under the file lock, and fsync it; AuditError when the log cannot take it."""
        with self._lock, self._locked() as f:
            self._catch_up(f)
            rec = AuditRecord(self._index + 1, time.time(), principal, operation, key, session, decision, reason,
                              self._hash).bounded().sealed()
            data = rec.line().encode()
            try:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise AuditError(f"audit log {self.path} cannot be written: {e.strerror}") from None
            self._offset, self._lines, self._index, self._hash = (self._offset + len(data), self._lines + 1,
                                                                  rec.index, rec.hash)
            return rec

    def records(self) -> list[AuditRecord]:
        """Every record, in order (read under a shared file lock: no other writer's append is half-seen)."""
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    fcntl.flock(f, fcntl.LOCK_SH)
                    return read_log(self.path)
            except (OSError, ValueError) as e:
                raise AuditError(f"audit log {self.path} cannot be read: {e}") from None
