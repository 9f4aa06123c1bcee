"""One audit: fit the attacks on public text, attack the private-like records' exposed tensor, score each attack."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from orchestrator.leakage.corpus import describe, private_records, public_sentences
from orchestrator.leakage.exposure import Exposure, Observer, exposure
from orchestrator.leakage.forward import DecoderForward, EncoderForward
from orchestrator.leakage.metrics import Sample, Scores, score_bag, score_positions, tokenize
from orchestrator.leakage.probe import BagProbe, RidgeProbe
from orchestrator.leakage.search_decoder import DecoderSearch
from orchestrator.leakage.search_encoder import EncoderSearch
from orchestrator.leakage.target import Target, load_target, one_thread

WEAK, STRONG, BAG = "probe", "search", "bag"  # the attacks' names in the output and the shipped data


@dataclass(frozen=True)
class Settings:
    """How much the attacker trains and how much is attacked: `train` public sentences (fewer at depth K when
    `train_budget` token-blocks would be exceeded), the first `eval` private-like records."""

    train: int = 1500
    eval: int = 40
    train_budget: int = 300_000
    seed: int = 0


FULL = Settings()
QUICK = Settings(train=300, eval=4)


def _train_sequences(target: Target, exp: Exposure, settings: Settings) -> list[list[int]]:
    """The attacker's training sequences: public sentences in file order, as many as the budget allows."""
    blocks = max(exp.depth, 1)
    seqs: list[list[int]] = []
    total = 0
    for sentence in public_sentences()[: settings.train]:
        ids = target.encode(sentence)
        if seqs and (total + len(ids)) * blocks > settings.train_budget:
            break
        seqs.append(ids)
        total += len(ids)
    return seqs


def _vector(target: Target, exp: Exposure, x: torch.Tensor) -> torch.Tensor:
    """One exposed pooled embedding or last-position logits as the bag probe's input (1, d): logits are first
    mapped back through the LM head, which the white-box attacker holds."""
    x = x.reshape(1, -1)
    if exp.kind == "logits" and isinstance(target.forward, DecoderForward):
        return target.forward.unhead(x)
    return x


def _hidden_attacks(target: Target, exp: Exposure, train: list[torch.Tensor], seqs: list[list[int]],
                    samples: list[Sample], observed: list[torch.Tensor], sigma: float) -> dict[str, dict[str, float]]:
    """The probe and the search against hidden states."""
    start = time.perf_counter()
    keep = [torch.tensor(target.content(s)) for s in seqs]
    x = torch.cat([h[k] for h, k in zip(train, keep, strict=True)])
    y = torch.cat([torch.tensor(s)[k] for s, k in zip(seqs, keep, strict=True)])
    probe = RidgeProbe(target.embeddings, target.candidates).fit(x, y)
    fitted = time.perf_counter() - start
    weak, strong = Scores(), Scores()
    start = time.perf_counter()
    for sample, obs in zip(samples, observed, strict=True):
        score_positions(weak, sample, probe.predict(obs).tolist(), target.tokenizer)
    probe_s = fitted + time.perf_counter() - start
    tolerance = 1e-3 + 1.5 * sigma  # the attacker knows the defence's scale
    start = time.perf_counter()
    fwd = target.forward
    for sample, obs in zip(samples, observed, strict=True):
        if isinstance(fwd, EncoderForward):
            fixed = {p: i for p, (i, c) in enumerate(zip(sample.ids, sample.content, strict=True)) if not c}
            guess = EncoderSearch(fwd, exp.depth, probe, tolerance).recover(obs, fixed)
        else:
            guess = DecoderSearch(fwd, exp.depth, probe, tolerance).recover(obs)
        score_positions(strong, sample, guess, target.tokenizer)
    search_s = fitted + time.perf_counter() - start
    return {WEAK: weak.as_dict(probe_s), STRONG: strong.as_dict(search_s)}


def _bag_attack(target: Target, exp: Exposure, train: list[torch.Tensor], seqs: list[list[int]],
                samples: list[Sample], observed: list[torch.Tensor]) -> dict[str, dict[str, float]]:
    """The bag-of-tokens probe against one vector per text."""
    start = time.perf_counter()
    x = torch.cat([_vector(target, exp, v) for v in train])
    bags = [[i for i, c in zip(s, target.content(s), strict=True) if c] for s in seqs]
    vocab = int(target.embeddings.shape[0])
    probe = BagProbe(vocab, target.candidates).fit(x, bags)
    scores = Scores()
    for sample, obs in zip(samples, observed, strict=True):
        score_bag(scores, sample, probe.predict(_vector(target, exp, obs))[0], target.tokenizer)
    return {BAG: scores.as_dict(time.perf_counter() - start)}


def audit(model: str, tensor: str = "hidden", depth: int | None = None, settings: Settings = FULL,
          sigma: float = 0.0) -> dict[str, Any]:
    """Attack what a party sees of `model` (`tensor` after `depth` blocks), with Gaussian noise of `sigma`
    (relative to each position's RMS) added as a defence; the result as `hsi leakage --json` prints it."""
    with one_thread():
        return _audit(model, tensor, depth, settings, sigma)


def _audit(model: str, tensor: str, depth: int | None, settings: Settings, sigma: float) -> dict[str, Any]:
    target = load_target(model)
    exp = exposure(target.model.graph, tensor, depth)
    samples = [tokenize(target.tokenizer, r) for r in private_records()[: settings.eval]]
    observer = Observer(exp, target.model.weights())
    gen = torch.Generator().manual_seed(settings.seed + 1)
    observed = [observer.observe(s.ids, gen, sigma) for s in samples]
    seqs = _train_sequences(target, exp, settings)
    start = time.perf_counter()
    train = target.exposed_states(seqs, exp, sigma, settings.seed)
    states_s = time.perf_counter() - start
    if tensor == "hidden":
        attacks = _hidden_attacks(target, exp, train, seqs, samples, observed, sigma)
    else:
        attacks = _bag_attack(target, exp, train, seqs, samples, observed)
    for scores in attacks.values():
        scores["seconds"] = round(scores["seconds"] + states_s, 2)
    return {
        "model": model, "depth": exp.depth, "tensor": tensor,
        "token_recovery": max(a["token_accuracy"] for a in attacks.values()),
        "attacks": attacks,
        "eval_tokens": sum(len(s.tokens) for s in samples),
        "corpus": describe(len(samples), len(seqs)),
    }
