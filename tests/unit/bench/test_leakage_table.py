"""bench/leakage_table.py: README's leakage curve and docs/leakage.md's noise table are the generated ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.support.scripts import load_script

SCRIPT = ROOT / "bench" / "leakage_table.py"


def test_readme_and_doc_tables_are_the_generated_ones() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _entry(probe: float, search: float) -> dict[str, object]:
    return {"token_recovery": max(probe, search), "attacks": {"probe": {"token_accuracy": probe},
                                                              "search": {"token_accuracy": search}}}


def test_the_curve_puts_both_models_side_by_side(tmp_path: Path) -> None:
    lt = load_script(SCRIPT)
    (tmp_path / "smollm2-135m.json").write_text(json.dumps({
        "model": "smollm2-135m", "commit": "abc", "eval_tokens": 10,
        "tensors": {"hidden": {"0": _entry(1.0, 1.0), "30": _entry(0.25, 0.5)},
                    "logits": {"final": {"token_recovery": 0.1, "attacks": {"bag": {"token_accuracy": 0.1}}}}},
        "noise": [{"sigma": 0.1, "depth": 2, "token_recovery": 0.5, "attacks": {"probe": 0.25, "search": 0.5},
                   "fidelity": {"greedy_agreement": 0.9}}]}))
    (tmp_path / "minilm-l6.json").write_text(json.dumps({
        "model": "minilm-l6", "commit": "def", "eval_tokens": 20, "tensors": {"hidden": {"1": _entry(0.9, 0.95)}}}))
    lines = lt.curve(tmp_path).splitlines()
    assert lines[0] == "| blocks | SmolLM2 probe | SmolLM2 search | MiniLM probe | MiniLM search |"
    assert lines[2:5] == ["| 0 | 100% | 100% | – | – |", "| 1 | – | – | 90.0% | 95.0% |",
                          "| 30 | 25.0% | 50.0% | – | – |"]
    assert lines[5] == "| output | logits (bag) 10.0% |  | pool (bag) – |  |"
    assert len(lines) == 6
    noise = lt.noise_table(tmp_path)
    assert noise.startswith("- smollm2-135m: 10 private-like tokens per full audit, commit abc, ?\n")
    assert "| smollm2-135m | 2 | 0.1 | 50.0% | 25.0% | 50.0% | greedy agreement 0.9000 |" in noise
    readme, doc = tmp_path / "README.md", tmp_path / "leakage.md"
    readme.write_text(f"a\n{lt.CURVE[0]}\nold\n{lt.CURVE[1]}\nb\n")
    doc.write_text(f"c\n{lt.NOISE[0]}\n{lt.NOISE[1]}\n")
    assert lt.stale(readme, doc, tmp_path) == [readme, doc]
    lt.write(readme, doc, tmp_path)
    assert lt.stale(readme, doc, tmp_path) == []
    assert readme.read_text().startswith(f"a\n{lt.CURVE[0]}\n| blocks |") and readme.read_text().endswith("b\n")
