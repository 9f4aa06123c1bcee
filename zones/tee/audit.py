"""The key service's audit log writer: append-only JSON lines, each hash-chained to the previous and fsynced."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from hsi.audit import GENESIS, AuditRecord, read_log, verify_records


class AuditLog:
    """Appends records; every append is flushed and fsynced before the call it records proceeds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        records = read_log(path)
        problems = verify_records(records)
        if problems:
            raise ValueError(f"audit log {path} is not intact, refusing to append: {problems[0]}")

    def append(self, principal: str, operation: str, key: str, session: str, decision: str,
               reason: str) -> AuditRecord:
        """Append one record chained to the file's last record (under an exclusive lock) and fsync it."""
        with self._lock, open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            last = _last_record(f)
            rec = AuditRecord(last.index + 1 if last else 0, time.time(), principal, operation, key, session,
                              decision, reason, last.hash if last else GENESIS).sealed()
            f.write(json.dumps(asdict(rec), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
            return rec

    def records(self) -> list[AuditRecord]:
        """Every record, in order."""
        with self._lock:
            return read_log(self.path)


def _last_record(f: TextIO) -> AuditRecord | None:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size == 0:
        return None
    f.seek(max(0, size - 65536))
    line = f.read().rstrip("\n").rsplit("\n", 1)[-1]
    return AuditRecord(**json.loads(line))
