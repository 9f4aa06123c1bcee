"""The key service's audit log: append-only JSON lines, each hash-chained to the previous and fsynced."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditRecord:
    """One call to the key service, allowed or denied."""

    index: int
    time: float
    principal: str
    operation: str
    key: str
    session: str
    decision: str  # "allow" | "deny"
    reason: str
    prev_hash: str
    hash: str = ""

    def body(self) -> bytes:
        """The canonical bytes the record's hash covers (everything but the hash)."""
        d = asdict(self)
        d.pop("hash")
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    def sealed(self) -> AuditRecord:
        """This record with its hash filled in."""
        return AuditRecord(**{**asdict(self), "hash": hashlib.sha256(self.body()).hexdigest()})


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


def read_log(path: Path) -> list[AuditRecord]:
    """The records of a log file (empty if it does not exist); ValueError naming a line that does not parse."""
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            out.append(AuditRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not an audit record ({e})") from None
    return out


def verify_records(records: list[AuditRecord]) -> list[str]:
    """Every break in the chain: an edited record, a removed one, records out of order."""
    problems = []
    prev = GENESIS
    for pos, r in enumerate(records):
        if r.index != pos:
            kind = "removed" if r.index > pos else "reordered or duplicated"
            problems.append(f"record at position {pos} has index {r.index}: a record was {kind}")
        if r.prev_hash != prev:
            problems.append(f"record {r.index} does not chain to the record before it (removed or reordered)")
        if r.sealed().hash != r.hash:
            problems.append(f"record {r.index} was edited: its hash does not match its contents")
        prev = r.hash
    return problems
