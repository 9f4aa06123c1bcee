"""Calibration: public per-op constants that MPC approximations need, measured on a fixed public corpus.

Fixed-point MPC cannot evaluate 1/sqrt(v) over the five decades of variance a transformer produces with
one approximation, so each normalisation op gets a public scale and a Newton iteration count chosen from
the range its inputs took on this corpus (never from a user's input). The model owner runs
`hsi calibrate`; the file ships with the code (one per packaged model) and every party reads the same one,
so the plan digest covers it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from orchestrator.ir import Graph, Op, OpType

# Varied public text: clinical, financial, legal, technical, everyday; 3 to ~70 tokens. The acceptance
# tests use other sentences.
CORPUS: tuple[str, ...] = (
    "Hello.",
    "The weather is nice today, so we walked to the harbour and had lunch outside.",
    "Discharge summary: 54-year-old woman admitted with community-acquired pneumonia, treated with "
    "ceftriaxone and azithromycin, afebrile for 48 hours, oxygen saturation 96% on room air.",
    "MRI of the lumbar spine shows a broad-based disc protrusion at L4-L5 with moderate foraminal narrowing.",
    "Q3 revenue rose 12% year over year to $4.2 billion, while operating margin contracted by 80 basis points "
    "due to higher input costs.",
    "The borrower shall repay the principal together with accrued interest at a fixed rate of 5.25% per annum.",
    "Wire transfer of EUR 250,000 flagged for review: beneficiary account opened 3 days ago in a different "
    "jurisdiction.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Can you recommend a good book about the history of mathematics?",
    "I can't find my keys anywhere; did I leave them in the car again?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "ERROR 0x80070005: access is denied when writing to C:\\Program Files\\App\\config.ini",
    "Allergies: penicillin (rash), sulfa drugs (anaphylaxis). Current medications: lisinopril 10 mg daily, "
    "atorvastatin 40 mg nightly, aspirin 81 mg.",
    "The quick brown fox jumps over the lazy dog 1234567890 times!!!",
    "Bitte senden Sie mir die Unterlagen bis Freitag.",
    "Our portfolio rebalancing reduced equity exposure from 70% to 60%, increasing duration in investment-grade "
    "corporate bonds and treasuries, with a small allocation to inflation-protected securities and cash "
    "equivalents ahead of the central bank meeting next month.",
)
NEWTON_MARGIN = 8.0  # inputs may leave the calibrated range by this factor either way and still converge
NEWTON_TARGET = 1e-4  # relative error of 1/sqrt after the iterations, in exact arithmetic


class CalibrationError(LookupError):
    """No calibration for a model, or one that does not fit the model's graph."""


def packaged_path(model: str) -> Path:
    """Where the calibration of a packaged model ships."""
    return Path(__file__).parent / "models" / "calibration" / f"{model}.json"


def _normaliser_input(op: Op, x: torch.Tensor) -> torch.Tensor:
    """The argument of 1/sqrt the op takes, per row."""
    if op.type == OpType.LAYERNORM:
        return x.var(-1, unbiased=False) + op.params["eps"]
    if op.type == OpType.RMSNORM:
        return x.pow(2).mean(-1) + op.params["eps"]
    return x.mean(0).pow(2).sum().reshape(1)  # pool with L2 normalisation


def newton_iterations(lo: float, hi: float) -> tuple[float, float, int]:
    """(scale, start, iterations) of 1/sqrt over [lo, hi] widened by NEWTON_MARGIN.

    The input is multiplied by `scale` so the range is centred on 1; the Newton iteration
    y <- y (3 - v y^2) / 2 starts at the public `start`, below 1/sqrt of the largest value so it never
    overshoots, and runs until the worst point of the range is within NEWTON_TARGET.
    """
    scale = 1.0 / math.sqrt(lo * hi)
    top = hi * scale * NEWTON_MARGIN
    bottom = lo * scale / NEWTON_MARGIN
    start = 1.0 / math.sqrt(top)
    v = torch.logspace(math.log10(bottom), math.log10(top), 400, dtype=torch.float64)
    y = torch.full_like(v, start)
    for k in range(1, 60):
        y = y * (3 - v * y * y) / 2
        if float((y * v.sqrt() - 1).abs().max()) < NEWTON_TARGET:
            return scale, start, k
    raise CalibrationError(f"1/sqrt over [{lo:.3g}, {hi:.3g}] does not converge in 60 Newton iterations")


def calibrate(model: str, corpus: tuple[str, ...] = CORPUS) -> dict[str, Any]:
    """Per-op input ranges of the plain model on the corpus, and the MPC constants chosen from them."""
    from orchestrator.models.registry import load_model
    from zones.plain.executor import PlainExecutor, SessionState, StepContext

    m = load_model(model)
    executor = PlainExecutor(m.graph.ops, m.weights())
    watched = [op for op in m.graph.ops if op.type in (OpType.LAYERNORM, OpType.RMSNORM)
               or (op.type == OpType.POOL and op.params.get("normalize"))]
    ranged = {op.name: op for op in m.graph.ops if op.type in (OpType.SOFTMAX, OpType.GELU, OpType.SILU_MUL)}
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    vmin: dict[str, float] = {}
    vmax: dict[str, float] = {}
    absmax: dict[str, float] = {}
    for text in corpus:
        if m.graph.arch == "llama":
            text = m.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                   add_generation_prompt=True)
        ids = torch.tensor(m.tokenizer(text)["input_ids"], dtype=torch.int64)
        env = executor.run({"input_ids": ids}, StepContext(0), SessionState(), [op.name for op in m.graph.ops])
        for op in m.graph.ops:
            if env[op.name].is_floating_point():
                absmax[op.name] = max(absmax.get(op.name, 0.0), float(env[op.name].abs().max()))
        for op in watched:
            v = _normaliser_input(op, env[op.inputs[0]].double())
            lo[op.name] = min(lo.get(op.name, math.inf), float(v.min()))
            hi[op.name] = max(hi.get(op.name, 0.0), float(v.max()))
        for name, op in ranged.items():
            x = env[op.inputs[0]]
            if op.type == OpType.SOFTMAX:
                x = x[x > torch.finfo(x.dtype).min]  # causal-masked entries are not inputs
            vmin[name] = min(vmin.get(name, math.inf), float(x.min()))
            vmax[name] = max(vmax.get(name, -math.inf), float(x.max()))
    ops: dict[str, Any] = {}
    for op in watched:
        scale, start, iters = newton_iterations(lo[op.name], hi[op.name])
        ops[op.name] = {"type": op.type.value, "min": lo[op.name], "max": hi[op.name], "inv_sqrt_scale": scale,
                        "inv_sqrt_start": start, "inv_sqrt_iters": iters}
    for name, op in ranged.items():
        ops[name] = {"type": op.type.value, "min": vmin[name], "max": vmax[name]}
    return {"model": model, "graph_digest": m.graph.digest(), "corpus_sha256": corpus_digest(corpus),
            "newton_margin": NEWTON_MARGIN, "ops": ops, "absmax": absmax}


def tensor_bound(calibration: dict[str, Any], tensor: str) -> float:
    """The largest magnitude `tensor` may take: its calibrated maximum widened by NEWTON_MARGIN."""
    try:
        return float(calibration["absmax"][tensor]) * NEWTON_MARGIN
    except KeyError:
        raise CalibrationError(f"the calibration has no range for tensor {tensor!r}; run `hsi calibrate` "
                               "again") from None


def corpus_digest(corpus: tuple[str, ...] = CORPUS) -> str:
    """SHA-256 of the calibration corpus."""
    return hashlib.sha256("\n".join(corpus).encode()).hexdigest()


def load_calibration(model: str, graph: Graph, path: str | Path | None = None) -> dict[str, Any]:
    """The calibration of `model` (the packaged file unless `path`); CalibrationError when missing or stale."""
    p = Path(path) if path else packaged_path(model)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"no MPC calibration for model {model!r} at {p}; run "
                               f"`hsi calibrate --model {model} --out {p}`") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CalibrationError(f"cannot read the MPC calibration {p}: {e}") from None
    if data.get("graph_digest") != graph.digest():
        raise CalibrationError(f"the MPC calibration {p} was made for another graph of {model!r}; run "
                               f"`hsi calibrate --model {model} --out {p}` again")
    return dict(data)
