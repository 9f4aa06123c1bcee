"""bench/results_table.py and bench/records.py: every record says where and when it was measured, README's table
is the generated one, and the table takes the latest record per (plan, model, network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.support.scripts import load_script

SCRIPT = ROOT / "bench" / "results_table.py"


def test_every_record_carries_commit_date_host_and_network():
    files = sorted((ROOT / "bench" / "results").glob("*.json"))
    assert files
    for path in files:
        for i, record in enumerate(json.loads(path.read_text())):
            missing = {"commit", "date", "host", "network"} - record.keys()
            assert not missing, f"{path.name} record {i} lacks {sorted(missing)}"


def test_readme_table_is_the_generated_one():
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _record(date: str, wall_s: float, commit: str) -> dict:
    return {"plan": "private-minilm", "model": "minilm-l6", "network": "lan", "tokens": 32, "wall_s": wall_s,
            "bytes_by_link": {"owner/he->keyholder/enclave": 2_000_000, "client/runtime->client/embed-client": 9},
            "mpc": {"mpc": {"rounds": 10, "bytes": 3_000_000_000}}, "cosine": 0.99999,
            "commit": commit, "date": date, "host": "test"}


def test_the_table_takes_the_latest_record_per_plan_model_and_network(tmp_path: Path):
    rt = load_script(SCRIPT)
    newer, older = _record("2026-11-25T10:00:00+00:00", 12.5, "bbbbbbb"), _record("2026-11-24T10:00:00+00:00", 30.0, "aaaaaaa")
    (tmp_path / "a.json").write_text(json.dumps([newer]))
    (tmp_path / "b.json").write_text(json.dumps([older, {"op": "linear", "seconds": 0.2, "network": "loopback"}]))
    assert rt.latest(rt.load_records(tmp_path))[("private-minilm", "minilm-l6", "lan")]["commit"] == "bbbbbbb"
    rows = [line for line in rt.table(tmp_path).splitlines() if line.startswith("| private-minilm")]
    assert rows == ["| private-minilm | minilm-l6 | lan | 12.5 | – | – | 2.0 MB + 3.00 GB MPC | cosine 0.999990 "
                    "| bbbbbbb | 2026-11-25 |"]
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{rt.BEGIN}\nold\n{rt.END}\nmid\n{rt.TP_BEGIN}\n{rt.TP_END}\nrest\n")
    assert not rt.readme_is_current(readme, tmp_path)
    rt.write_readme(readme, tmp_path)
    assert rt.readme_is_current(readme, tmp_path)
    assert readme.read_text().startswith(f"intro\n{rt.BEGIN}\n| plan |")
    assert readme.read_text().endswith(f"{rt.END}\nmid\n{rt.TP_BEGIN}\n| plan | network | texts per pass |"
                                       f" tokens | wall s | embeddings/min | MPC rounds | MPC bytes | min cosine |"
                                       f" commit | date |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
                                       f" --- | --- |\n{rt.TP_END}\nrest\n")


def test_throughput_records_get_their_own_table(tmp_path: Path):
    rt = load_script(SCRIPT)
    one = {"bench": "throughput", "plan": "private-minilm", "network": "lan", "batch": 8, "tokens": 285,
           "wall_s": 120.0, "embeddings_per_min": 4.0, "mpc_rounds": 2466, "mpc_bytes": 9.3e9, "min_cosine": 0.99998,
           "commit": "ccccccc", "date": "2026-12-07T10:00:00+00:00", "host": "test"}
    (tmp_path / "t.json").write_text(json.dumps([one, {**one, "batch": 1, "tokens": 39, "embeddings_per_min": 1.0}]))
    assert rt.latest(rt.load_records(tmp_path)) == {}  # not an end-to-end record of one input
    rows = rt.throughput_table(tmp_path).splitlines()[2:]
    assert rows == ["| private-minilm | lan | 1 | 39 | 120.0 | 1.00 | 2,466 | 9.30 GB | 0.999980 | ccccccc | 2026-12-07 |",
                    "| private-minilm | lan | 8 | 285 | 120.0 | 4.00 | 2,466 | 9.30 GB | 0.999980 | ccccccc | 2026-12-07 |"]


def test_written_records_are_stamped_and_keep_what_they_have(tmp_path: Path):
    records = load_script(ROOT / "bench" / "records.py")
    rows = [{"plan": "p", "network": "wan"}, {"op": "linear", "date": "2026-01-01T00:00:00+00:00"}]
    records.write_records(tmp_path / "r.json", rows)
    written = json.loads((tmp_path / "r.json").read_text())
    assert all({"commit", "date", "host", "network"} <= r.keys() for r in written)
    assert written[0]["network"] == "wan" and written[1]["network"] == "loopback"
    assert written[1]["date"] == "2026-01-01T00:00:00+00:00" and written[0]["commit"] == written[1]["commit"]


def test_variants_and_hf_under_split_profiles_stay_out_of_the_table():
    rt = load_script(SCRIPT)
    shipped = _record("2026-11-25T10:00:00+00:00", 12.5, "bbbbbbb")
    variant = {**shipped, "plan": "private-minilm+dcf", "wall_s": 9.0}
    hf = {**shipped, "plan": "hf-direct", "network": "wan-latency"}
    split = {**shipped, "network": "wan-latency"}
    best = rt.latest([shipped, variant, hf, split])
    assert set(best) == {("private-minilm", "minilm-l6", "lan"), ("private-minilm", "minilm-l6", "wan-latency")}
