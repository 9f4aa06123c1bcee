"""Encrypted linear layers on real weights and real activations match torch; packing, params, ops."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.models.registry import load_model
from orchestrator.policy import CkksParams
from tests.unit.he.conftest import Keys, capture
from zones.common.ckks.crypto import decrypt_matrix, encrypt_matrix
from zones.common.ckks.packing import Packing
from zones.common.ckks.params import HeParamsError, make_context
from zones.he.linear import EncryptedLinear, OpCounts, baby_giant_split, rotation_indices

# (model, linear op, the activation that feeds it) for every matrix shape of the two models
CASES = [
    ("minilm-l6", "encoder.layer.0.attention.self.query", "embeddings.LayerNorm"),               # 384->384
    ("minilm-l6", "encoder.layer.0.intermediate.dense", "encoder.layer.0.attention.output.LayerNorm"),  # 384->1536
    ("minilm-l6", "encoder.layer.0.output.dense", "encoder.layer.0.intermediate.intermediate_act_fn"),  # 1536->384
    ("smollm2-135m", "model.layers.0.self_attn.q_proj", "model.layers.0.input_layernorm"),       # 576->576
    ("smollm2-135m", "model.layers.0.self_attn.k_proj", "model.layers.0.input_layernorm"),       # 576->192
    ("smollm2-135m", "model.layers.0.mlp.gate_proj", "model.layers.0.post_attention_layernorm"),  # 576->1536
    ("smollm2-135m", "model.layers.0.mlp.down_proj", "model.layers.0.mlp.act_fn"),               # 1536->576
]


@pytest.mark.parametrize(("model", "op", "source"), CASES, ids=[c[1].split(".", 3)[-1] for c in CASES])
def test_real_linear_matches_torch(he_keys: Keys, model: str, op: str, source: str) -> None:
    x = capture(model, [source])[source]
    weights = load_model(model).weights()
    w = weights[f"{op}.weight"].double().numpy()
    b = weights[f"{op}.bias"].double().numpy() if f"{op}.bias" in weights else None
    layer = EncryptedLinear(he_keys.ctx.cc, he_keys.packing, w, b)
    counts = OpCounts()
    out = layer.forward(encrypt_matrix(he_keys.ctx, he_keys.keys.public, he_keys.packing, x), counts)
    got = decrypt_matrix(he_keys.ctx, he_keys.keys.secret, he_keys.packing, out, x.shape[0], w.shape[0])
    want = x @ w.T + (b if b is not None else 0)
    err = np.abs(got - want)
    print(f"{op} {w.shape[1]}->{w.shape[0]} tokens {x.shape[0]} |x|max {np.abs(x).max():.1f}: max abs err "
          f"{err.max():.2e}, p99 {np.quantile(err, 0.99):.2e}, median {np.median(err):.2e}")
    assert err.max() <= 1e-3
    assert counts.ptmults == layer.plaintexts * len(out)
    assert counts.rotations + counts.hoisted_rotations > 0


def test_packing_round_trip() -> None:
    p = Packing(8192, 512)
    x = np.random.default_rng(0).normal(size=(37, 700))
    vectors = p.pack(x)
    # 16 slot columns of 2 tokens (real, imaginary) each
    assert p.stride == 16 and p.tokens_per_ct == 32
    assert p.grid(37, 700) == (2, 2) and len(vectors) == 2 and len(vectors[0]) == 2
    assert np.array_equal(p.unpack(vectors, 37, 700), x)
    # a slot rotation by the stride shifts every token's features by one
    shifted = np.roll(vectors[0][0], -p.stride).reshape(512, 16).T
    assert np.array_equal(shifted.real[:, :-1], x[:16, 1:512])
    assert np.array_equal(shifted.imag[:, :-1], x[16:32, 1:512])
    with pytest.raises(ValueError, match="must be a power of two"):
        Packing(8192, 384)
    assert Packing.from_meta(p.meta()) == p
    with pytest.raises(ValueError, match="unknown packing"):
        Packing.from_meta({"packing": "row-major"})


def test_rotations_are_exactly_what_the_packing_needs() -> None:
    p = Packing(8192, 512)
    g1 = baby_giant_split(512)
    rots = rotation_indices(p)
    assert g1 == 32 and len(rots) == (g1 - 1) + (512 // g1 - 1)
    assert all(r % p.stride == 0 for r in rots)


def test_insecure_parameters_refused() -> None:
    with pytest.raises(HeParamsError, match="ring_dim 4096 .* does not reach 128-bit security"):
        make_context(CkksParams(ring_dim=4096))
    with pytest.raises(HeParamsError, match="ring_dim 16384 .* depth 12 .* 128-bit"):
        make_context(CkksParams(ring_dim=16384, depth=12, scale_bits=50))
    assert make_context(CkksParams(ring_dim=4096, allow_insecure=True)).slots == 2048


def test_uncached_layer_encodes_per_call_and_agrees(he_keys: Keys) -> None:
    rng = np.random.default_rng(3)
    w, b, x = rng.normal(size=(384, 384)) / 20, rng.normal(size=384), rng.normal(size=(7, 384))
    ct = encrypt_matrix(he_keys.ctx, he_keys.keys.public, he_keys.packing, x)
    outs = []
    for cached in (True, False):
        layer = EncryptedLinear(he_keys.ctx.cc, he_keys.packing, w, b, cached=cached)
        assert layer.plaintexts == 512
        outs.append(decrypt_matrix(he_keys.ctx, he_keys.keys.secret, he_keys.packing, layer.forward(ct), 7, 384))
    assert np.abs(outs[0] - (x @ w.T + b)).max() < 1e-4 and np.abs(outs[1] - outs[0]).max() < 1e-4
