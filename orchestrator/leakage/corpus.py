"""The audit's shipped corpora: public training sentences and private-like evaluation records with their spans."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
PUBLIC_FILE = "public.txt"
PRIVATE_FILE = "private-like.jsonl"


@dataclass(frozen=True)
class Span:
    """A sensitive field of a record: characters [start, end) of its text."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class Record:
    """One private-like text (a clinical note or a bank message) and its sensitive spans."""

    id: int
    kind: str
    text: str
    spans: tuple[Span, ...]


@functools.lru_cache(maxsize=2)
def public_sentences(directory: Path = CORPUS_DIR) -> tuple[str, ...]:
    """The attacker's training text, one sentence a line (docstrings of the standard library and Faker text)."""
    return tuple(line for line in (directory / PUBLIC_FILE).read_text().splitlines() if line)


@functools.lru_cache(maxsize=2)
def private_records(directory: Path = CORPUS_DIR) -> tuple[Record, ...]:
    """The evaluation records, in file order."""
    out = []
    for line in (directory / PRIVATE_FILE).read_text().splitlines():
        r = json.loads(line)
        out.append(Record(r["id"], r["kind"], r["text"], tuple(Span(**s) for s in r["spans"])))
    return tuple(out)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe(records: int, train_sentences: int, directory: Path = CORPUS_DIR) -> dict[str, object]:
    """What an audit trained and evaluated on: both files' names and hashes, and how much of each it used."""
    return {"eval": PRIVATE_FILE, "eval_sha256": _sha256(directory / PRIVATE_FILE), "eval_records": records,
            "train": PUBLIC_FILE, "train_sha256": _sha256(directory / PUBLIC_FILE),
            "train_sentences": train_sentences}

