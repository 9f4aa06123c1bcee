"""Scores of a recovery: token accuracy, exact-sequence rate, word F1 and recall of sensitive spans."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.leakage.corpus import Record


@dataclass(frozen=True)
class Sample:
    """An evaluation text as the model sees it: token ids (special tokens included), which positions carry the
    text (the attack is scored on those), and per sensitive span the positions of its tokens."""

    record: Record
    ids: tuple[int, ...]
    content: tuple[bool, ...]
    spans: tuple[tuple[int, ...], ...]

    @property
    def tokens(self) -> list[int]:
        """The ids of the text's own tokens."""
        return [t for t, c in zip(self.ids, self.content, strict=True) if c]


def tokenize(tokenizer: Any, record: Record) -> Sample:
    """A record as `tokenizer` encodes it (with its special tokens), spans mapped onto token positions."""
    enc = tokenizer(record.text, return_offsets_mapping=True)
    special = set(tokenizer.all_special_ids)
    offsets = enc["offset_mapping"]
    ids = tuple(int(i) for i in enc["input_ids"])
    content = tuple(i not in special for i in ids)
    spans = tuple(tuple(p for p, (a, b) in enumerate(offsets) if content[p] and a < s.end and b > s.start)
                  for s in record.spans)
    return Sample(record, ids, content, spans)


def _words(text: str) -> Counter[str]:
    return Counter(re.findall(r"\w+", text.lower()))


def word_f1(predicted: str, reference: str) -> float:
    """F1 of the multisets of (lower-cased) words."""
    p, r = _words(predicted), _words(reference)
    common = sum((p & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


@dataclass
class Scores:
    """Running totals over the evaluation samples."""

    correct: float = 0.0
    tokens: int = 0
    exact: int = 0
    sequences: int = 0
    f1: float = 0.0
    spans_found: int = 0
    spans: int = 0

    def as_dict(self, seconds: float) -> dict[str, float]:
        """The per-attack metrics of the audit's output."""
        return {
            "token_accuracy": round(self.correct / max(self.tokens, 1), 4),
            "exact_sequence_rate": round(self.exact / max(self.sequences, 1), 4),
            "word_f1": round(self.f1 / max(self.sequences, 1), 4),
            "sensitive_recall": round(self.spans_found / max(self.spans, 1), 4),
            "seconds": round(seconds, 2),
        }


def score_positions(scores: Scores, sample: Sample, predicted: Sequence[int], tokenizer: Any) -> None:
    """Add a positional recovery (a token id for every position of the sample) to `scores`."""
    hits = [p == t for p, t in zip(predicted, sample.ids, strict=True)]
    content = [h for h, c in zip(hits, sample.content, strict=True) if c]
    scores.correct += sum(content)
    scores.tokens += len(content)
    scores.exact += all(content)
    scores.sequences += 1
    guess = [p for p, c in zip(predicted, sample.content, strict=True) if c]
    scores.f1 += word_f1(tokenizer.decode(guess), tokenizer.decode(sample.tokens))
    scores.spans += len(sample.spans)
    scores.spans_found += sum(bool(span) and all(hits[p] for p in span) for span in sample.spans)


def score_bag(scores: Scores, sample: Sample, bag: Sequence[int], tokenizer: Any) -> None:
    """Add a bag-of-tokens recovery (order free) to `scores`: its accuracy is the multiset overlap divided by
    the larger of the two sizes, so guessing more tokens than the text has does not pay."""
    truth, guess = Counter(sample.tokens), Counter(bag)
    overlap = sum((truth & guess).values())
    size = max(sum(truth.values()), sum(guess.values()), 1)
    scores.correct += overlap / size * len(sample.tokens)
    scores.tokens += len(sample.tokens)
    scores.exact += truth == guess
    scores.sequences += 1
    scores.f1 += word_f1(tokenizer.decode(list(bag)), tokenizer.decode(sample.tokens))
    scores.spans += len(sample.spans)
    scores.spans_found += sum(bool(span) and all(sample.ids[p] in guess for p in span) for span in sample.spans)
