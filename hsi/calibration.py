"""Calibration: public per-op constants that MPC approximations need, measured on a fixed public corpus.

Fixed-point MPC cannot evaluate 1/sqrt(v) over the five decades of variance a transformer produces with
one approximation, so each normalisation op gets a public scale and a Newton iteration count chosen from
the range its inputs took on this corpus (never from a user's input). The model owner runs
`hsi calibrate`; the file ships with the code (one per packaged model) and every party reads the same one,
so the plan digest covers it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from hsi.errors import HsiError
from hsi.ir import Graph, Op, OpType

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
# The complex lane layouts whose partial-output gains a calibration lists: ring dimensions 2^13-2^16, every
# power-of-two width from 64 to 4096 the layout allows.
LANE_LAYOUTS: tuple[tuple[int, int], ...] = tuple((slots, 1 << e) for slots in (4096, 8192, 16384, 32768)
                                                  for e in range(6, 13) if (1 << (e - 1)) ** 2 >= slots)


class CalibrationError(HsiError, LookupError):
    """No calibration for a model, or one that does not fit the model's graph."""


def packaged_path(model: str) -> Path:
    """Where the calibration of a packaged model ships."""
    return Path(__file__).parent / "models" / "calibration" / f"{model}.json"


def _normaliser_input(op: Op, x: torch.Tensor) -> torch.Tensor:
    """The argument of 1/sqrt the op takes, per row."""
    if op.type == OpType.LAYERNORM:
        return x.var(-1, unbiased=False) + float(op.params["eps"])
    if op.type == OpType.RMSNORM:
        return x.pow(2).mean(-1) + float(op.params["eps"])
    return x.mean(0).pow(2).sum().reshape(1)  # pool with L2 normalisation


@functools.lru_cache(maxsize=1)
def linear_start() -> tuple[float, float]:
    """(a, b): the line a + b w closest to 1/sqrt(w) on [1, 2] in largest relative error (grid search; the
    error is 2.2e-2)."""
    w = torch.linspace(1.0, 2.0, 401, dtype=torch.float64)
    a_lo, a_hi, b_lo, b_hi = 1.0, 2.0, -1.0, 0.0
    best = (math.inf, 0.0, 0.0)
    for _ in range(6):  # zoom in on the best cell of a 41 x 41 grid
        aa = torch.linspace(a_lo, a_hi, 41, dtype=torch.float64)
        bb = torch.linspace(b_lo, b_hi, 41, dtype=torch.float64)
        y = aa[:, None, None] + bb[None, :, None] * w
        err = (1 - y * w.sqrt()).abs().amax(-1)
        i, j = divmod(int(err.argmin()), err.size(1))
        best = (float(err[i, j]), float(aa[i]), float(bb[j]))
        da, db = (a_hi - a_lo) / 20, (b_hi - b_lo) / 20
        a_lo, a_hi, b_lo, b_hi = best[1] - da, best[1] + da, best[2] - db, best[2] + db
    return best[1], best[2]


def inv_sqrt_reference(u: torch.Tensor, schedule: dict[str, Any]) -> torch.Tensor:
    """1/sqrt(u) for u already multiplied by the schedule's `inv_sqrt_scale`, in exact arithmetic, step by step
    as zones/mpc/functions.py's inv_sqrt computes it on shares."""
    bottom, steps = float(schedule["inv_sqrt_bottom"]), int(schedule["inv_sqrt_steps"])
    thresholds = bottom * 2.0 ** torch.arange(1, steps + 1, dtype=torch.float64)
    k = (u.unsqueeze(-1) >= thresholds).sum(-1).to(torch.float64)  # octaves above the bottom
    w = u / bottom * 2.0 ** -k  # in [1, 2) inside the range
    a, b = (float(c) for c in schedule["inv_sqrt_start"])
    y: torch.Tensor = a + b * w
    for _ in range(int(schedule["inv_sqrt_iters"])):
        y = y * (3 - w * y * y) / 2
    return y * 2.0 ** (-k / 2) / math.sqrt(bottom)


def newton_schedule(lo: float, hi: float) -> dict[str, Any]:
    """How MPC computes 1/sqrt over [lo, hi] widened by NEWTON_MARGIN: the input is multiplied by
    `inv_sqrt_scale` (centring the range on 1), compared with the `inv_sqrt_steps` octave thresholds
    `inv_sqrt_bottom` * 2^j at once, brought by its octave into [1, 2), where the line `inv_sqrt_start` is
    within a few percent of 1/sqrt and `inv_sqrt_iters` Newton iterations reach NEWTON_TARGET everywhere.
    A public start over the whole range would need 10-16 iterations; one comparison costs about three."""
    scale = 1.0 / math.sqrt(lo * hi)
    bottom = lo * scale / NEWTON_MARGIN
    top = hi * scale * NEWTON_MARGIN
    steps = max(0, math.ceil(math.log2(top / bottom)) - 1)
    a, b = linear_start()
    u = torch.logspace(math.log10(bottom), math.log10(top), 2000, dtype=torch.float64)
    for iters in range(1, 8):
        schedule = {"inv_sqrt_scale": scale, "inv_sqrt_bottom": bottom, "inv_sqrt_steps": steps,
                    "inv_sqrt_start": [a, b], "inv_sqrt_iters": iters}
        if float((inv_sqrt_reference(u, schedule) * u.sqrt() - 1).abs().max()) < NEWTON_TARGET:
            return schedule
    raise CalibrationError(f"1/sqrt over [{lo:.3g}, {hi:.3g}] does not converge in 7 Newton iterations")


def calibrate(model: str, corpus: tuple[str, ...] = CORPUS) -> dict[str, Any]:
    """Per-op input ranges of the plain model on the corpus, and the MPC constants chosen from them."""
    from hsi.models.executor import PlainExecutor, SessionState, StepContext
    from hsi.models.registry import load_model

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
        ops[op.name] = {"type": op.type.value, "min": lo[op.name], "max": hi[op.name],
                        **newton_schedule(lo[op.name], hi[op.name])}
    for name, op in ranged.items():
        ops[name] = {"type": op.type.value, "min": vmin[name], "max": vmax[name]}
    return {"model": model, "graph_digest": m.graph.digest(), "corpus_sha256": corpus_digest(corpus),
            "newton_margin": NEWTON_MARGIN, "ops": ops, "absmax": absmax,
            "partial_outputs": partial_outputs(m.graph, m.weights())}


def layout_key(slots: int, width: int) -> str:
    """How a complex lane layout is named in a calibration's partial-output gains."""
    return f"{slots}/{width}"


def partial_outputs(graph: Graph, weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per linear op: its largest bias magnitude and, per complex lane layout, the gain bounding its partial
    output's slots (see packing.ComplexLanePacking.partial_gain). Public, like the ranges: derived from the
    weights, not from any input."""
    from hsi.ckks.packing import ComplexLanePacking

    out: dict[str, Any] = {}
    for op in graph.ops:
        if op.type != OpType.LINEAR:
            continue
        w = weights[op.weights[0]].detach().double().numpy()
        bias = float(weights[op.weights[1]].abs().max()) if len(op.weights) > 1 else 0.0
        out[op.name] = {"bias_absmax": bias, "gain": {layout_key(slots, width): ComplexLanePacking(
            slots, width).partial_gain(w) for slots, width in LANE_LAYOUTS}}
    return out


def partial_output_bound(calibration: dict[str, Any], op: Op, slots: int, width: int) -> float:
    """The largest magnitude a slot of linear op `op`'s partial output in the complex lane layout (slots,
    width) may take: its gain times its input's bound, plus its bias."""
    try:
        entry = calibration["partial_outputs"][op.name]
        gain = float(entry["gain"][layout_key(slots, width)])
    except KeyError:
        raise CalibrationError(f"the calibration has no partial-output gain of linear op {op.name!r} in the "
                               f"complex lane layout of {slots} slots, width {width}; run `hsi calibrate` again "
                               f"(it lists the layouts {', '.join(layout_key(*k) for k in LANE_LAYOUTS)})") from None
    return gain * tensor_bound(calibration, op.inputs[0]) + float(entry["bias_absmax"])


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
