"""The plain executor runs the IR of the real packaged models exactly as Hugging Face does."""

from __future__ import annotations

import pytest
import torch

from hsi.batch import pad
from hsi.models.executor import PlainExecutor, SessionState, StepContext
from hsi.models.registry import load_graph, load_model
from orchestrator.reference import reference_generate

SENTENCES = [
    "Patient presents with acute chest pain radiating to the left arm.",
    "The quarterly audit flagged three wire transfers above the reporting threshold.",
    "Could you pick up some milk on the way home?",
    "MRI shows a 2 cm lesion in the left temporal lobe; biopsy scheduled for Tuesday.",
]


def test_minilm_matches_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    m = load_model("minilm-l6")
    st = SentenceTransformer(str(m.source.directory), device="cpu")
    ex = PlainExecutor(m.graph.ops, m.weights())
    for text in SENTENCES:
        ids = torch.tensor(m.tokenizer(text)["input_ids"])
        got = ex.run({"input_ids": ids}, StepContext(0), SessionState(), ["pool"])["pool"]
        want = torch.from_numpy(st.encode(text))
        assert got.shape == (384,)
        assert (got - want).abs().max().item() <= 1e-5, text


def test_minilm_batch_equals_each_text_alone() -> None:
    """Four texts of different lengths in one padded pass: each embedding as if it ran alone."""
    m = load_model("minilm-l6")
    ex = PlainExecutor(m.graph.ops, m.weights())
    seqs = [m.tokenizer(t)["input_ids"] for t in SENTENCES]
    ids, batch = pad(seqs, m.tokenizer.pad_token_id)
    assert batch is not None and len(set(batch.lengths)) > 1, "texts of different lengths, so padding is exercised"
    got = ex.run({"input_ids": ids}, StepContext(0, batch), SessionState(), ["pool"])["pool"]
    assert got.shape == (4, 384)
    for row, seq in zip(got, seqs, strict=True):
        alone = ex.run({"input_ids": torch.tensor(seq)}, StepContext(0), SessionState(), ["pool"])["pool"]
        assert (row - alone).abs().max().item() <= 1e-5


def test_batch_refused_for_a_causal_decoder() -> None:
    ops = [o for o in load_graph("smollm2-135m").ops if o.name.startswith("model.layers.0.self_attn.scores")]
    ids, batch = pad([[1, 2, 3], [4, 5]], 0)
    q = torch.zeros(len(ids), 576)
    k = torch.zeros(len(ids), 192)
    with pytest.raises(ValueError, match="bidirectional encoders"):
        PlainExecutor(ops, {}).run({o: t for o, t in zip(ops[0].inputs, (q, k), strict=True)},
                                   StepContext(0, batch), SessionState(), [])


@pytest.mark.parametrize("prompt", ["Write a haiku about the sea.", "List three uses of a paperclip."])
def test_smollm2_greedy_with_kv_cache_matches_generate(prompt: str) -> None:
    m = load_model("smollm2-135m")
    text = m.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
    ids = torch.tensor(m.tokenizer(text)["input_ids"])
    want = reference_generate("smollm2-135m", ids, 16)
    assert len(want) == 16, "prompt chosen so that generation does not stop early"
    ex = PlainExecutor(m.graph.ops, m.weights())
    state, cur, offset, got = SessionState(), ids, 0, []
    for _ in range(16):
        tok = ex.run({"input_ids": cur}, StepContext(offset), state, ["sample"])["sample"]
        got.append(int(tok))
        offset += len(cur)
        cur = tok
    assert got == want
    # the cache grew by one position per generated token after the prompt
    assert state.kv["model.layers.0.self_attn.scores"].shape[1] == len(ids) + 15


def test_missing_weights_named() -> None:
    m = load_model("minilm-l6")
    with pytest.raises(KeyError, match="weights missing for the stage"):
        PlainExecutor(m.graph.ops, {})
