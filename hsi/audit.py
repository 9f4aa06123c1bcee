"""The key service's audit log format: hash-chained JSON records, and the check that a chain is intact."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

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
