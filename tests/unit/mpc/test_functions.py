"""MPC nonlinear functions on real activations, two parties, against torch."""

from __future__ import annotations

import math

import numpy as np
import torch

from orchestrator.models.registry import load_model
from tests.unit.he.conftest import capture
from zones.mpc.compat import import_crypten
from zones.mpc.functions import gelu, gelu_tail_coefficients, layernorm, rmsnorm, silu_mul
from zones.mpc.local import run_parties


def test_gelu_fit_in_plaintext() -> None:
    from scipy.stats import norm

    x = np.linspace(-30, 30, 60001)
    coeffs = gelu_tail_coefficients()
    a = np.abs(x)
    t = np.where(a < 4, a / 2 - 1, 1.0)
    tail = np.polynomial.polynomial.polyval(t, coeffs) * (a < 4)
    assert np.abs(np.maximum(x, 0) - tail - x * norm.cdf(x)).max() < 3e-4


def _errors(cases: dict[str, tuple[torch.Tensor, ...]]) -> dict[str, float]:
    crypten = import_crypten()
    crypten.cfg.functions.sqrt_nr_iters = 5
    rank = crypten.communicator.get().get_rank()

    def share(t: torch.Tensor) -> object:
        return crypten.cryptensor(t if rank == 0 else torch.zeros_like(t), src=0)

    out = {}
    x, = cases["gelu"]
    out["gelu"] = float((gelu(share(x)).get_plain_text() - torch.nn.functional.gelu(x)).abs().max())
    for name in ("layernorm_emb", "layernorm_out"):
        x, w, b, eps, scale = cases[name]
        want = torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, float(eps))
        got = layernorm(share(x), w, b, float(eps), float(scale)).get_plain_text()
        out[name] = float((got - want).abs().max() / want.abs().max())
    x, w, eps, scale = cases["rmsnorm"]
    want = w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + float(eps))
    gate, up = cases["silu_mul"]
    want_silu = torch.nn.functional.silu(gate) * up
    out["silu_mul"] = float((silu_mul(share(gate), share(up)).get_plain_text() - want_silu).abs().max()
                             / want_silu.abs().max())
    out["rmsnorm"] = float((rmsnorm(share(x), w, float(eps), float(scale)).get_plain_text() - want).abs().max()
                            / want.abs().max())
    return out


def test_functions_on_real_activations() -> None:
    mini = load_model("minilm-l6").weights()
    acts = capture("minilm-l6", ["encoder.layer.0.intermediate.dense", "embeddings",
                                 "encoder.layer.0.output.residual"])
    smol = load_model("smollm2-135m").weights()
    s_acts = capture("smollm2-135m", ["model.layers.2.self_attn.residual", "model.layers.2.mlp.gate_proj",
                                      "model.layers.2.mlp.up_proj"])

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).float()

    def scale_for(x: torch.Tensor, rms: bool) -> torch.Tensor:
        # the public per-op scale: bring the largest observed variance to ~10 (from the plain zone's range)
        v = x.pow(2).mean(-1) if rms else x.var(-1, unbiased=False)
        return torch.tensor(10.0 / float(v.max()))

    emb, out_res = t(acts["embeddings"]), t(acts["encoder.layer.0.output.residual"])
    s_res = t(s_acts["model.layers.2.self_attn.residual"])
    cases = {
        "gelu": (t(acts["encoder.layer.0.intermediate.dense"]),),
        "layernorm_emb": (emb, mini["embeddings.LayerNorm.weight"], mini["embeddings.LayerNorm.bias"],
                          torch.tensor(1e-12), scale_for(emb, False)),
        "layernorm_out": (out_res, mini["encoder.layer.0.output.LayerNorm.weight"],
                          mini["encoder.layer.0.output.LayerNorm.bias"], torch.tensor(1e-12),
                          scale_for(out_res, False)),
        "silu_mul": (t(s_acts["model.layers.2.mlp.gate_proj"]), t(s_acts["model.layers.2.mlp.up_proj"])),
        "rmsnorm": (s_res, smol["model.layers.2.post_attention_layernorm.weight"], torch.tensor(1e-5),
                    scale_for(s_res, True)),
    }
    errors = run_parties(_errors, (cases,), parties=2)
    worst = {k: max(e[k] for e in errors) for k in errors[0]}
    print("MPC errors on real activations:", {k: f"{v:.2e}" for k, v in worst.items()})
    assert worst["gelu"] <= 5e-3  # absolute; GELU outputs reach 25
    assert worst["layernorm_emb"] <= 2e-2 and worst["layernorm_out"] <= 2e-2  # relative to the output range
    assert worst["rmsnorm"] <= 2e-2
    assert worst["silu_mul"] <= 2e-2  # relative to the output range
    assert all(math.isfinite(v) for v in worst.values())
