"""The audit's scores on hand-made recoveries."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.leakage.corpus import Record, Span
from orchestrator.leakage.metrics import Sample, Scores, score_bag, score_positions, word_f1


class _Words:
    """A tokenizer stand-in: id i is the word w<i>."""

    def decode(self, ids: list[int]) -> str:
        return " ".join(f"w{i}" for i in ids)


def _sample(ids: tuple[int, ...], content: tuple[bool, ...], spans: tuple[tuple[int, ...], ...]) -> Sample:
    record = Record(0, "bank", "x", tuple(Span(0, 1, "name") for _ in spans))
    return Sample(record, ids, content, spans)


TOK: Any = _Words()


def test_word_f1() -> None:
    assert word_f1("the cat sat", "The cat sat") == 1.0
    assert word_f1("dog", "the cat") == 0.0
    assert word_f1("the cat", "the cat sat on") == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_positional_scores_skip_special_tokens_and_need_whole_spans() -> None:
    sample = _sample((101, 5, 6, 7, 8, 102), (False, True, True, True, True, False), ((1, 2), (3,), (4,)))
    s = Scores()
    score_positions(s, sample, [0, 5, 6, 9, 8, 0], TOK)  # specials wrong (not scored); one content token wrong
    out = s.as_dict(1.234)
    assert out["token_accuracy"] == 0.75 and out["exact_sequence_rate"] == 0.0
    assert out["sensitive_recall"] == round(2 / 3, 4) and out["seconds"] == 1.23
    assert out["word_f1"] == 0.75
    score_positions(s, sample, list(sample.ids), TOK)
    assert s.as_dict(0)["exact_sequence_rate"] == 0.5 and s.as_dict(0)["token_accuracy"] == 0.875


def test_a_bag_is_scored_by_overlap_over_the_larger_size() -> None:
    sample = _sample((1, 2, 2, 3), (True,) * 4, ((0,), (3,)))
    s = Scores()
    score_bag(s, sample, [2, 1, 9, 9, 9, 9, 9, 9], TOK)  # 2 right of 8 guessed: guessing more does not pay
    assert s.as_dict(0)["token_accuracy"] == 0.25 and s.as_dict(0)["sensitive_recall"] == 0.5
    exact = Scores()
    score_bag(exact, sample, [3, 2, 1, 2], TOK)
    assert exact.as_dict(0)["token_accuracy"] == 1.0 and exact.as_dict(0)["exact_sequence_rate"] == 1.0
