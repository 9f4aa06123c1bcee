"""Every MPC kernel on real activations (captured from the plain zone), two parties and a dealer, against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsi.ir import OpType
from hsi.models.registry import load_model
from tests.unit.zones.he.conftest import capture
from zones.mpc.functions import SILU_CUTOFF, gelu_tail_coefficients, silu_tail_coefficients
from zones.mpc.kernels import MASKED_SCORE
from zones.mpc.local import run_ops


def test_gelu_fit_in_plaintext() -> None:
    from scipy.stats import norm

    x = np.linspace(-30, 30, 60001)
    coeffs = gelu_tail_coefficients()
    a = np.abs(x)
    t = np.where(a < 4, a / 2 - 1, 1.0)
    tail = np.polynomial.polynomial.polyval(t, coeffs) * (a < 4)
    assert np.abs(np.maximum(x, 0) - tail - x * norm.cdf(x)).max() < 3e-4


def test_silu_fit_in_plaintext() -> None:
    x = np.linspace(-300, 300, 600001)
    a = np.abs(x)
    t = np.where(a < SILU_CUTOFF, 2 * a / SILU_CUTOFF - 1, 1.0)
    tail = np.polynomial.polynomial.polyval(t, silu_tail_coefficients()) * (a < SILU_CUTOFF)
    assert np.abs(np.maximum(x, 0) - tail - x / (1 + np.exp(-x))).max() < 1e-4


# op -> (bound, relative?): relative bounds are against the output's largest magnitude.
MINILM = {
    "embeddings.LayerNorm": (2e-2, True),
    "encoder.layer.0.attention.self.qkv": (2e-3, False),          # q|k|v stacked
    "encoder.layer.0.attention.self.scores": (5e-3, False),    # logits reach 40
    "encoder.layer.0.attention.self.softmax": (1e-2, False),
    "encoder.layer.0.attention.self.context": (1e-3, False),
    "encoder.layer.0.attention.output.residual": (1e-4, False),
    "encoder.layer.0.attention.output.LayerNorm": (2e-2, True),
    "encoder.layer.0.intermediate.intermediate_act_fn": (5e-3, False),  # GELU outputs reach 25
    "encoder.layer.0.output.dense": (2e-3, False),
    "encoder.layer.0.output.LayerNorm": (2e-2, True),           # variances up to 130
    "pool": (1e-3, False),
}
SMOLLM2 = {
    "model.layers.0.input_layernorm": (2e-2, True),
    "model.layers.3.input_layernorm": (2e-2, True),             # mean squares up to 1.4e3
    "model.layers.12.input_layernorm": (2e-2, True),            # ... and 1.1e6
    "model.layers.1.self_attn.rope_q": (1e-3, False),
    "model.layers.1.self_attn.rope_k": (1e-3, False),
    "model.layers.1.self_attn.scores": (5e-3, True),            # causal, grouped-query heads
    "model.layers.1.self_attn.softmax": (1e-2, False),
    "model.layers.1.self_attn.context": (1e-3, False),
    "model.layers.1.mlp.act_fn": (2e-2, True),                  # SiLU(gate) * up
    "model.layers.1.mlp.down_proj": (2e-3, True),
    "lm_head": (1e-2, False),
    "sample": (0.0, False),                                     # the greedy token id, exactly
}


def _mpc_errors(model: str, ops: dict[str, tuple[float, bool]], comparisons: str = "circuit"
                ) -> dict[str, tuple[float, float]]:
    m = load_model(model)
    acts = capture(model, sorted({t for name in ops for t in m.graph.op(name).inputs} | set(ops)))

    def t(name: str, masked: bool) -> torch.Tensor:
        x = torch.from_numpy(acts[name])
        # the MPC scores kernel writes MASKED_SCORE where the plain one writes the lowest float
        return x.double().clamp(min=MASKED_SCORE) if masked else x

    def masked(name: str) -> bool:
        op = m.graph.op(name)
        return op.type == OpType.ATTN_SCORES and bool(op.params["causal"])

    jobs = [([name], {i: t(i, masked(i)) for i in m.graph.op(name).inputs}, 0) for name in ops]
    out = {}
    for name, (got, _) in zip(ops, run_ops(model, jobs, comparisons=comparisons), strict=True):
        want = t(name, masked(name)).double()
        err = float((got.double() - want).abs().max())
        out[name] = (err / float(want.abs().max()) if ops[name][1] else err, ops[name][0])
    return out


@pytest.mark.slow  # 21 s and 38 s; the all-MPC plans' outputs against plaintext run in `make test`
@pytest.mark.parametrize("comparisons", ["circuit", "dcf"])
@pytest.mark.parametrize("model,ops", [("minilm-l6", MINILM), ("smollm2-135m", SMOLLM2)])
def test_kernels_on_real_activations(model: str, ops: dict[str, tuple[float, bool]], comparisons: str) -> None:
    errors = _mpc_errors(model, ops, comparisons)
    print(f"\n{model} MPC errors ({comparisons} comparisons):", {k.split(".", 2)[-1]: f"{e:.2e}" for k, (e, _) in errors.items()})
    bad = {k: f"{e:.3g} > {bound}" for k, (e, bound) in errors.items() if not e <= bound}
    assert not bad, f"MPC kernels outside their bounds: {bad}"


def test_dcf_comparisons_keep_the_kernels_in_their_bounds() -> None:
    """The MiniLM kernels that compare (GELU, softmax's row maximum, LayerNorm's and the pool's inverse square
    roots), with comparisons from the dealer's DCF keys, on real activations."""
    compare = {k: v for k, v in MINILM.items() if k.split(".")[-1] in ("intermediate_act_fn", "softmax",
                                                                       "LayerNorm", "pool")}
    assert len(compare) >= 4
    errors = _mpc_errors("minilm-l6", compare, "dcf")
    bad = {k: f"{e:.3g} > {bound}" for k, (e, bound) in errors.items() if not e <= bound}
    assert not bad, f"MPC kernels with DCF comparisons outside their bounds: {bad}"


def test_batched_attention_and_pool() -> None:
    """Three texts padded into one pass: MPC attention (each text against its own keys) and per-text pooling
    match the plain executor's batched ops."""
    from hsi.batch import pad
    from hsi.models.executor import PlainExecutor, SessionState, StepContext

    m = load_model("minilm-l6")
    texts = ["Blood pressure 150/95 at rest.", "Wire 2,400 EUR to the landlord by Friday, reference 7731.", "Hi"]
    ids, batch = pad([m.tokenizer(t)["input_ids"] for t in texts], m.tokenizer.pad_token_id)
    att = "encoder.layer.0.attention.self"
    last = m.graph.ops[-2].name
    names = [f"{att}.query", f"{att}.key", f"{att}.value", f"{att}.scores", f"{att}.softmax", f"{att}.context",
             last, "pool"]
    plain = PlainExecutor(m.graph.ops, m.weights()).run({"input_ids": ids}, StepContext(0, batch),
                                                         SessionState(), names)
    jobs = {f"{att}.scores": ([f"{att}.query", f"{att}.key"], 5e-3),
            f"{att}.softmax": ([f"{att}.scores"], 1e-2),
            f"{att}.context": ([f"{att}.softmax", f"{att}.value"], 1e-3),
            "pool": ([last], 1e-3)}
    results = run_ops("minilm-l6", [([op], {i: plain[i].clamp(min=MASKED_SCORE) for i in inputs}, 0)
                                    for op, (inputs, _) in jobs.items()], batch=batch)
    for (op, (_, bound)), (got, _) in zip(jobs.items(), results, strict=True):
        want = plain[op].clamp(min=MASKED_SCORE).double()
        assert got.shape == want.shape, op
        assert float((got.double() - want).abs().max()) <= bound, op
