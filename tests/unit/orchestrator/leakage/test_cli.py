"""`hsi leakage`: its errors name what is wrong, and `--json --quick` prints exactly the issue's keys."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main

KEYS = {"model", "depth", "tensor", "token_recovery", "attacks", "eval_tokens", "corpus"}
SCORES = {"token_accuracy", "exact_sequence_rate", "word_f1", "sensitive_recall", "seconds"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--model", "minilm-l6", "--depth", "7"], "--depth must be 0..6 for minilm-l6"),
    (["--model", "smollm2-135m"], "--depth must be 0..30 for smollm2-135m"),
    (["--model", "smollm2-135m", "--tensor", "pool"], "model smollm2-135m has no 'pool' tensor"),
    (["--model", "minilm-l6", "--tensor", "logits"], "model minilm-l6 has no 'logits' tensor"),
    (["--model", "minilm-l6", "--tensor", "pool", "--depth", "2"], "the pool tensor comes after all 6 blocks"),
])
def test_a_bad_model_depth_or_tensor_is_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    assert main(["leakage", *argv, "--json"]) != 0
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err and "Traceback" not in captured.err
    assert captured.out == ""


def test_a_quick_audit_prints_the_issues_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leakage", "--model", "minilm-l6", "--depth", "1", "--json", "--quick"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == KEYS
    assert (result["model"], result["depth"], result["tensor"]) == ("minilm-l6", 1, "hidden")
    assert set(result["attacks"]) == {"probe", "search"}
    for scores in result["attacks"].values():
        assert set(scores) == SCORES and 0 <= scores["token_accuracy"] <= 1 and scores["seconds"] > 0
    assert result["token_recovery"] == max(a["token_accuracy"] for a in result["attacks"].values())
    assert result["eval_tokens"] > 50 and result["corpus"]["eval_records"] == 4
    assert result["token_recovery"] > 0.9  # MiniLM's first layer hides nothing (the shipped data: test_attacks)
