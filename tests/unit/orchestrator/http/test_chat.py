"""The streamed text: deltas of a growing token sequence add up to the whole decoded text."""

from __future__ import annotations

from hsi.models.registry import load_tokenizer
from orchestrator.http.chat import Detokenizer


class _Bytes:
    """A byte-level tokenizer: one token per UTF-8 byte (as SmolLM2's BPE splits rare characters)."""

    eos_token_id = -1

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def test_deltas_add_up_to_the_decoded_text() -> None:
    tok = load_tokenizer("minilm-l6")
    ids = tok("Blood pressure 150/95 at rest, heart rate 72.", add_special_tokens=False)["input_ids"]
    text = Detokenizer(tok)
    deltas = [text.add(i) for i in ids]
    assert "".join(deltas) == tok.decode(ids, skip_special_tokens=True)
    assert sum(1 for d in deltas if d) > len(ids) // 2  # it streams, not all at the end


def test_a_character_split_across_tokens_waits_for_its_last_byte() -> None:
    text = Detokenizer(_Bytes())
    deltas = [text.add(b) for b in "né".encode()]
    assert deltas == ["n", "", "é"]
