"""The audit log format: bounded fields, strict parsing of every line, a missing or torn log refused."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from hsi.audit import FIELD_LIMITS, GENESIS, AuditRecord, bounded, parse_record, read_log, verify_records


def _chain(n: int) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    for i in range(n):
        out.append(AuditRecord(i, 1.0 + i, "owner/h", "attest", "", "", "allow", "granted",
                               out[-1].hash if out else GENESIS).sealed())
    return out


def test_bounded_cuts_long_values_with_a_marker_and_escapes_control_characters() -> None:
    assert bounded("ckks-main", 128) == "ckks-main"
    cut = bounded("A" * 70_000, 128)
    assert cut == "A" * 128 + "...[truncated: 70000 chars]"
    assert bounded("a\nb\x1b[31m", 64) == "a\\nb\\x1b[31m"
    rec = AuditRecord(0, 1.0, "p" * 500, "o" * 500, "k" * 70_000, "s" * 500, "deny", "r" * 70_000,
                      GENESIS).bounded().sealed()
    for name, limit in FIELD_LIMITS.items():
        assert len(getattr(rec, name)) <= limit + 40, name
    assert len(rec.line()) < 4096 and verify_records([rec]) == []


def test_parse_record_refuses_lines_that_are_not_records() -> None:
    good = _chain(1)[0].line()
    assert parse_record(good, "x:1") == _chain(1)[0]
    d = json.loads(good)
    bad = {
        "not JSON": good[: len(good) // 2],
        "not an object": "[1, 2]",
        "missing fields": json.dumps({k: v for k, v in d.items() if k != "reason"}),
        "field 'index' is a str": json.dumps(d | {"index": "0"}),
        "field 'index' is a bool": json.dumps(d | {"index": True}),
        "field 'key' is a int": json.dumps(d | {"key": 5}),
        "not 64 hex digits": json.dumps(d | {"hash": "zz"}),
        "unknown fields": json.dumps(d | {"extra": 1}),
    }
    for why, line in bad.items():
        with pytest.raises(ValueError, match=f"x:1: not an audit record.*{why}"):
            parse_record(line, "x:1")


def test_read_log_refuses_a_missing_file_a_bad_line_and_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with pytest.raises(ValueError, match="no audit log file"):
        read_log(path)
    assert read_log(path, missing_ok=True) == []
    lines = [r.line() for r in _chain(3)]
    path.write_text("".join(lines))
    assert read_log(path) == _chain(3)
    path.write_text(lines[0] + "garbage\n" + lines[2])
    with pytest.raises(ValueError, match=r"audit.log:2: not an audit record"):
        read_log(path)
    path.write_text(lines[0] + lines[1] + lines[2].rstrip("\n"))
    with pytest.raises(ValueError, match=r"audit.log:3: the last line is incomplete"):
        read_log(path)
    path.write_text("")
    assert read_log(path) == []


def test_verify_records_continues_a_chain_from_a_known_record() -> None:
    chain = _chain(4)
    assert verify_records(chain) == []
    assert verify_records(chain[2:], start=2, prev=chain[1].hash) == []
    assert verify_records(chain[2:], start=1, prev=chain[0].hash) != []
    edited = AuditRecord(**{**asdict(chain[3]), "decision": "deny"})
    assert any("record 3 was edited" in p for p in verify_records([edited], start=3, prev=chain[2].hash))
