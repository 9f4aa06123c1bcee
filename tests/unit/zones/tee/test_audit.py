"""The key service's audit chain detects edits, removals and reorders; the appender stays usable whatever a\ncaller sends, shares the log with other writers and refuses a log that was cut, replaced or torn."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from hsi.audit import GENESIS, AuditRecord, read_log, verify_records
from zones.tee.audit import AuditError, AuditLog


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


def test_a_huge_field_is_cut_and_the_log_stays_appendable(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    huge = "A" * 70_000
    rec = log.append("mallory/x", "get_public_material", huge, "", "deny", f"no grant on key {huge!r}")
    assert rec.key.startswith("A" * 128) and rec.key.endswith("...[truncated: 70000 chars]")
    assert len(rec.reason) < 1100
    log.append("owner/h", "attest", "", "", "allow", "granted")
    AuditLog(path).append("owner/h", "attest", "", "", "allow", "granted")  # a restart reads it back
    assert max(len(line) for line in path.read_text().splitlines()) < 4096
    assert [r.index for r in read_log(path)] == [0, 1, 2] and verify_records(read_log(path)) == []


def test_appender_needs_no_byte_window_to_find_the_last_record(tmp_path: Path) -> None:
    # a log an older enclave wrote with unbounded fields: its last record is 140 KB
    path = tmp_path / "audit.log"
    big = AuditRecord(0, 1.0, "mallory/x", "get_public_material", "A" * 70_000, "", "deny", "B" * 70_000,
                      GENESIS).sealed()
    path.write_text(json.dumps(asdict(big), sort_keys=True) + "\n")
    log = AuditLog(path)
    log.append("owner/h", "attest", "", "", "allow", "granted")
    log.append("owner/h", "attest", "", "", "allow", "granted")
    records = read_log(path)
    assert [r.index for r in records] == [0, 1, 2] and records[1].prev_hash == big.hash
    assert verify_records(records) == []


def test_two_appenders_of_one_log_keep_one_chain(tmp_path: Path) -> None:
    # another process appending between this one's appends: each re-reads from its last known offset
    path = tmp_path / "audit.log"
    a, b = AuditLog(path), AuditLog(path)
    for i in range(6):
        (a if i % 3 else b).append(f"p/{i}", "attest", "", "", "allow", "granted")
    records = read_log(path)
    assert [r.principal for r in records] == [f"p/{i}" for i in range(6)] and verify_records(records) == []


def test_appender_refuses_a_log_cut_replaced_or_torn(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(3):
        log.append("owner/h", "attest", "", f"s{i}", "allow", "granted")
    lines = path.read_text().splitlines(keepends=True)
    with open(path, "r+") as f:  # cut in place
        f.truncate(len(lines[0]))
    with pytest.raises(AuditError, match="shrank"):
        log.append("owner/h", "attest", "", "", "allow", "granted")
    replacement = tmp_path / "other.log"
    replacement.write_text("".join(lines))
    replacement.replace(path)
    with pytest.raises(AuditError, match="was replaced"):
        log.append("owner/h", "attest", "", "", "allow", "granted")
    path.write_text("".join(lines) + lines[0][:20])  # a torn write at the end
    with pytest.raises(AuditError, match="incomplete"):
        AuditLog(path)
    path.write_text(lines[0] + "not a record\n")
    with pytest.raises(ValueError, match="not intact, refusing to append.*not an audit record"):
        AuditLog(path)


def test_audit_verify_reports_a_missing_or_unparseable_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.keys import cmd_audit

    path = tmp_path / "audit.log"

    def verify() -> tuple[int, str]:
        code = cmd_audit(argparse.Namespace(sub="verify", log=str(path)))
        got = capsys.readouterr()
        return code, " ".join((got.out + got.err).split()) + "\n"  # rich wraps long lines

    assert verify() == (1, f"audit: {path}: no audit log file there\n")
    AuditLog(path).append("owner/h", "attest", "", "", "allow", "granted")
    code, text = verify()
    assert code == 0 and "1 records, chain intact" in text
    with open(path, "a") as f:
        f.write('{"index": 1}\n')
    code, text = verify()
    assert code == 1 and "audit.log:2: not an audit record" in text
