"""The one way benchmarks write their JSON records, each stamped with where and when it was measured."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def commit() -> str:
    """The checked-out commit, `-dirty` when tracked files have uncommitted changes; "unknown" outside git."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        return head + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def host() -> str:
    """This machine: host name, cores and memory."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{socket.gethostname()} ({os.cpu_count()} vCPU, {memory:.0f} GiB)"


def stamp(records: list[dict[str, Any]], network: str = "loopback") -> None:
    """Give every record `commit`, `date` (UTC, ISO 8601), `host` and `network`, in place; a key a record
    already has is kept, so a record written again keeps when and where it was first measured. `network` is
    the caller's: records without one (op benchmarks) ran on this machine alone."""
    found = {"commit": commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "host": host(), "network": network}
    for record in records:
        for key, value in found.items():
            record.setdefault(key, value)


def write_records(path: Path | None, records: list[dict[str, Any]]) -> None:
    """Stamp the records and write them as a JSON list to `path` (nothing when no path was asked for)."""
    if path is None:
        return
    stamp(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1))
