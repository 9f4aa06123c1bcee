"""The one way benchmarks write their JSON records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_records(path: Path | None, records: list[dict[str, Any]]) -> None:
    """Write the records as a JSON list to `path` (nothing when no path was asked for)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1))
