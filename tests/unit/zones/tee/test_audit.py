"""The key service's audit chain detects edits, removals and reorders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hsi.audit import read_log, verify_records
from zones.tee.audit import AuditLog


def test_audit_chain_detects_edits_removals_reorders(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(4):
        log.append("owner/h", "get_public_material", "k", f"s{i}", "allow", "granted")
    lines = path.read_text().splitlines()
    assert verify_records(read_log(path)) == []

    def problems(new_lines: list[str]) -> list[str]:
        path.write_text("\n".join(new_lines) + "\n")
        return verify_records(read_log(path))

    edited = json.loads(lines[1])
    edited["decision"] = "deny"
    assert any("record 1 was edited" in p for p in problems([lines[0], json.dumps(edited), *lines[2:]]))
    assert any("a record was removed" in p for p in problems([lines[0], *lines[2:]]))
    assert any("reordered" in p for p in problems([lines[0], lines[2], lines[1], lines[3]]))
    path.write_text("\n".join(lines) + "\n")
    restarted = AuditLog(path)  # reopening keeps the chain
    restarted.append("x/y", "attest", "", "", "allow", "granted")
    assert verify_records(read_log(path)) == [] and len(read_log(path)) == 5
    path.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match="not intact, refusing to append"):
        AuditLog(path)
