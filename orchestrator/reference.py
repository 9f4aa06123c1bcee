"""The plaintext reference: the Hugging Face model run directly, for `--check` and the tests."""

from __future__ import annotations

import torch

from hsi.models.registry import load_model


@torch.no_grad()
def reference_embedding(model: str, text: str) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embedding from the HF encoder (sentence-transformers' recipe)."""
    m = load_model(model)
    enc = m.tokenizer(text, return_tensors="pt")
    hidden = m.hf(**enc).last_hidden_state[0]
    mask = enc["attention_mask"][0].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(0) / mask.sum()
    return torch.nn.functional.normalize(pooled, p=2, dim=0)


@torch.no_grad()
def reference_generate(model: str, input_ids: torch.Tensor, max_new_tokens: int) -> list[int]:
    """Greedy continuation from HF `generate(do_sample=False)`."""
    m = load_model(model)
    out = m.hf.generate(input_ids[None], attention_mask=torch.ones_like(input_ids)[None],
                        max_new_tokens=max_new_tokens, do_sample=False)
    return [int(t) for t in out[0, len(input_ids):]]


def compare_embeddings(got: list[float], want: torch.Tensor) -> dict[str, float]:
    """`max_abs_err` and `cosine` of an embedding against the reference."""
    g = torch.tensor(got, dtype=torch.float32)
    return {"max_abs_err": float((g - want).abs().max()),
            "cosine": float(torch.nn.functional.cosine_similarity(g, want, dim=0))}


def compare_tokens(got: list[int], want: list[int]) -> dict[str, int | bool]:
    """`token_match`: the length of the common prefix, and whether the sequences are identical."""
    n = 0
    for a, b in zip(got, want, strict=False):
        if a != b:
            break
        n += 1
    return {"token_match": n, "identical": got == want, "reference_tokens": len(want)}
