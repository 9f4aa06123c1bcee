"""The Gaussian-noise defence: token recovery against output fidelity at several noise scales."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from orchestrator.leakage.audit import Settings, audit
from orchestrator.leakage.corpus import private_records
from orchestrator.leakage.exposure import defence_noise, exposure, plan_arithmetic
from orchestrator.leakage.forward import EncoderForward
from orchestrator.leakage.metrics import tokenize
from orchestrator.leakage.target import load_target, one_thread

SIGMAS = (0.0, 0.1, 0.3, 1.0, 3.0)  # noise std relative to each position's RMS
NOISE_DEPTH = 2  # the hidden state after two blocks: what the owner sees under selective-smollm2
NOISE_SETTINGS = Settings(train=400, eval=6)


@torch.no_grad()
def fidelity(model: str, depth: int, sigma: float, records: int, seed: int = 0) -> dict[str, float]:
    """How much of the output survives noise of `sigma` on the hidden state after `depth` blocks, over the
    first `records` private-like records: for a decoder the share of positions whose greedy next token is
    unchanged, for an encoder the mean cosine of the sentence embedding to the noiseless one."""
    with one_thread():
        return _fidelity(model, depth, sigma, records, seed)


def _fidelity(model: str, depth: int, sigma: float, records: int, seed: int) -> dict[str, float]:
    target = load_target(model)
    exp = exposure(target.model.graph, "hidden", depth)
    gen = torch.Generator().manual_seed(seed + 2)
    fwd = target.forward
    same, positions, cosines = 0, 0, []
    for record in private_records()[:records]:
        ids = torch.tensor([tokenize(target.tokenizer, record).ids])
        if isinstance(fwd, EncoderForward):
            h = fwd.hidden_at(ids, depth)
            noisy = plan_arithmetic(defence_noise(h, sigma, gen), exp, gen)
            cosines.append(float(F.cosine_similarity(fwd.finish(h, depth), fwd.finish(noisy, depth)).mean()))
            continue
        h, _ = fwd.hidden_at(ids, depth)
        noisy = plan_arithmetic(defence_noise(h, sigma, gen), exp, gen)
        clean_out, _ = fwd.blocks(h, depth, fwd.layers)
        noisy_out, _ = fwd.blocks(noisy, depth, fwd.layers)
        agree = fwd.logits(clean_out).argmax(-1) == fwd.logits(noisy_out).argmax(-1)
        same += int(agree.sum())
        positions += agree.numel()
    if cosines:
        return {"cosine": round(sum(cosines) / len(cosines), 6)}
    return {"greedy_agreement": round(same / max(positions, 1), 4)}


def noise_curve(model: str, depth: int = NOISE_DEPTH, sigmas: tuple[float, ...] = SIGMAS,
                settings: Settings = NOISE_SETTINGS) -> list[dict[str, Any]]:
    """One entry per noise scale: the audit's token recovery (each attack's token accuracy) and the fidelity."""
    out = []
    for sigma in sigmas:
        result = audit(model, "hidden", depth, settings, sigma)
        out.append({"sigma": sigma, "depth": depth, "token_recovery": result["token_recovery"],
                    "attacks": {name: a["token_accuracy"] for name, a in result["attacks"].items()},
                    "fidelity": fidelity(model, depth, sigma, settings.eval, settings.seed),
                    "eval_tokens": result["eval_tokens"]})
    return out
