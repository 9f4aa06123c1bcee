"""The attacked model as the white-box attacker holds it: weights, tokenizer, vocabulary, batched training states."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hsi.models.registry import LoadedModel, load_model
from orchestrator.leakage.exposure import Exposure, defence_noise, plan_arithmetic
from orchestrator.leakage.forward import DecoderForward, EncoderForward

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread meanwhile: the attacks are many small ops, which a second thread slows down
    several times over on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class Target:
    """A packaged model with the attacker's forward pass and the token ids a text can contain."""

    model: LoadedModel
    forward: EncoderForward | DecoderForward
    candidates: torch.Tensor  # ids a tokenised text can hold (no special or reserved tokens)
    max_tokens: int = 64  # training sentences are cut to this many tokens

    @property
    def name(self) -> str:
        """The model's name."""
        return str(self.model.graph.model)

    @property
    def encoder(self) -> bool:
        """Whether it is the bidirectional encoder (else the causal decoder)."""
        return self.model.graph.arch == "bert"

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer."""
        return self.model.tokenizer

    @property
    def embeddings(self) -> torch.Tensor:
        """The input embedding matrix (V, d)."""
        return self.forward.word

    def encode(self, text: str) -> list[int]:
        """Token ids of a training sentence, special tokens included, cut to `max_tokens`."""
        ids = list(self.tokenizer(text)["input_ids"])
        if len(ids) > self.max_tokens:
            ids = ids[: self.max_tokens - 1] + ids[-1:] if self.encoder else ids[: self.max_tokens]
        return ids

    def content(self, ids: Sequence[int]) -> list[bool]:
        """Which positions carry text (not a special token)."""
        special = set(self.tokenizer.all_special_ids)
        return [i not in special for i in ids]

    @torch.no_grad()
    def batch_states(self, seqs: list[list[int]], depth: int) -> list[torch.Tensor]:
        """The hidden state after `depth` blocks of each sequence, (T_i, d) each, batched by padding."""
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
        budget = 4096  # tokens per batch
        start = 0
        while start < len(order):
            width = len(seqs[order[min(start + 1, len(order) - 1)]])
            n = max(1, budget // max(width, 1))
            chunk = order[start:start + n]
            width = max(len(seqs[i]) for i in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.bool)
            for row, i in enumerate(chunk):
                ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
                mask[row, :len(seqs[i])] = True
            if isinstance(self.forward, EncoderForward):
                h = self.forward.hidden_at(ids, depth, mask)
            else:
                h, _ = self.forward.hidden_at(ids, depth)
            for row, i in enumerate(chunk):
                out[i] = h[row, :len(seqs[i])]
            start += n
        return out

    @torch.no_grad()
    def exposed_states(self, seqs: list[list[int]], exp: Exposure, sigma: float, seed: int) -> list[torch.Tensor]:
        """What the party would receive for each training sequence: the hidden state, the pooled embedding
        (1, d) or the last position's logits (1, V), through the plan's arithmetic and the defence's noise."""
        gen = torch.Generator().manual_seed(seed)
        if exp.kind == "hidden":
            states = self.batch_states(seqs, exp.depth)
        elif isinstance(self.forward, EncoderForward):
            fwd = self.forward
            states = [fwd.finish(h[None], fwd.layers) for h in self.batch_states(seqs, fwd.layers)]
        else:
            dec = self.forward
            states = [dec.logits(h[-1:]) for h in self.batch_states(seqs, dec.layers)]
        return [plan_arithmetic(defence_noise(s, sigma, gen), exp, gen) for s in states]


def _candidates(model: LoadedModel) -> torch.Tensor:
    tok = model.tokenizer
    vocab = int(model.hf.get_input_embeddings().weight.shape[0])
    special = set(tok.all_special_ids) - {tok.unk_token_id}
    names = tok.convert_ids_to_tokens(list(range(vocab)))
    keep = [i for i, n in enumerate(names) if i not in special and not (n or "").startswith("[unused")]
    return torch.tensor(keep)


@functools.lru_cache(maxsize=2)
def load_target(name: str) -> Target:
    """The attacker's view of a packaged model (cached per process)."""
    model = load_model(name)
    g = model.graph
    fwd: EncoderForward | DecoderForward
    if g.arch == "bert":
        fwd = EncoderForward(model.hf, g.config, float(g.op("embeddings.LayerNorm").params["eps"]))
    else:
        theta = float(g.op("model.layers.0.self_attn.rope_q").params["theta"])
        fwd = DecoderForward(model.hf, g.config, float(g.op("model.norm").params["eps"]), theta)
    return Target(model, fwd, _candidates(model))
