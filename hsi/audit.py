"""The key service's audit log format: hash-chained JSON records, and the check that a chain is intact."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
# Longest value (in characters, before escaping) each text field of a record keeps; a longer value is cut and
# marked (see `bounded`), so one record stays under ~20 KB whatever a caller sends.
FIELD_LIMITS = {"principal": 128, "operation": 64, "key": 128, "session": 128, "decision": 16, "reason": 1024}
_HASH = re.compile(r"[0-9a-f]{64}")


def bounded(value: str, limit: int) -> str:
    """`value` with control characters escaped, cut to `limit` characters with a marker naming its length."""
    cut = value if len(value) <= limit else value[:limit]
    shown = cut if cut.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return shown if len(value) <= limit else f"{shown}...[truncated: {len(value)} chars]"


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

    def bounded(self) -> AuditRecord:
        """This record with every text field cut to FIELD_LIMITS (before sealing)."""
        return AuditRecord(**{**asdict(self), **{f: bounded(getattr(self, f), n) for f, n in FIELD_LIMITS.items()}})

    def line(self) -> str:
        """The record as one line of the log (newline included)."""
        return json.dumps(asdict(self), sort_keys=True) + "\n"


_TYPES: dict[str, tuple[type, ...]] = {f.name: (str,) for f in fields(AuditRecord)} | {"index": (int,),
                                                                                      "time": (int, float)}


def parse_record(line: str, where: str) -> AuditRecord:
    """The record one log line holds; ValueError naming `where` when the line is not a well-formed record."""
    try:
        d: Any = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not an audit record (not JSON: {e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{where}: not an audit record (a JSON {type(d).__name__}, not an object)")
    if set(d) != set(_TYPES):
        missing, extra = sorted(set(_TYPES) - set(d)), sorted(set(d) - set(_TYPES))
        raise ValueError(f"{where}: not an audit record (missing fields {missing}, unknown fields "
                         f"{[bounded(str(x), 64) for x in extra[:8]]})")
    for name, types in _TYPES.items():
        if not isinstance(d[name], types) or isinstance(d[name], bool):
            raise ValueError(f"{where}: not an audit record (field {name!r} is a {type(d[name]).__name__})")
    for name in ("prev_hash", "hash"):
        if not _HASH.fullmatch(d[name]):
            raise ValueError(f"{where}: not an audit record (field {name!r} is not 64 hex digits)")
    return AuditRecord(**d)


def read_log(path: Path, missing_ok: bool = False) -> list[AuditRecord]:
    """The records of a log file; ValueError naming a line that is not a record, a last line cut short (a torn
    write), or a missing file (unless `missing_ok`: then no records)."""
    if not path.is_file():
        if missing_ok and not path.exists():
            return []
        raise ValueError(f"{path}: no audit log file there")
    out = []
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        for n, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                raise ValueError(f"{path}:{n}: the last line is incomplete (no newline): a torn or partial write")
            out.append(parse_record(line, f"{path}:{n}"))
    return out


def verify_records(records: list[AuditRecord], start: int = 0, prev: str = GENESIS) -> list[str]:
    """Every break in the chain: an edited record, a removed one, records out of order. `start` and `prev`: the
    index and the hash the first record follows (a log's tail after the records already checked)."""
    problems = []
    for pos, r in enumerate(records, start=start):
        if r.index != pos:
            kind = "removed" if r.index > pos else "reordered or duplicated"
            problems.append(f"record at position {pos} has index {r.index}: a record was {kind}")
        if r.prev_hash != prev:
            problems.append(f"record {r.index} does not chain to the record before it (removed or reordered)")
        if r.sealed().hash != r.hash:
            problems.append(f"record {r.index} was edited: its hash does not match its contents")
        prev = r.hash
    return problems
