"""Encrypted linear layers on real weights and real activations match torch; packing, params, ops."""

from __future__ import annotations

import numpy as np
import pytest

from hsi.calibration import load_calibration
from hsi.ckks.packing import ComplexLanePacking, LanePacking, Packing, input_packing, packing_from_meta
from hsi.models.registry import load_graph, load_model
from hsi.policy import CkksParams
from tests.unit.zones.he.conftest import Keys, capture
from zones.common.ckks.crypto import decrypt_matrix, encrypt_matrix
from zones.common.ckks.params import HeParamsError, make_context
from zones.he.linear import EncryptedLinear, OpCounts, baby_giant_split, rotation_indices

# (model, linear op, the activation that feeds it) for every matrix shape of the two models
CASES = [
    ("minilm-l6", "encoder.layer.0.attention.self.qkv", "embeddings.LayerNorm"),                 # 384->1152
    ("minilm-l6", "encoder.layer.0.intermediate.dense", "encoder.layer.0.attention.output.LayerNorm"),  # 384->1536
    ("minilm-l6", "encoder.layer.0.output.dense", "encoder.layer.0.intermediate.intermediate_act_fn"),  # 1536->384
    ("smollm2-135m", "model.layers.0.self_attn.qkv_proj", "model.layers.0.input_layernorm"),      # 576->960
    ("smollm2-135m", "model.layers.0.self_attn.o_proj", "model.layers.0.self_attn.context"),      # 576->576
    ("smollm2-135m", "model.layers.0.mlp.gate_up_proj", "model.layers.0.post_attention_layernorm"),  # 576->3072
    ("smollm2-135m", "model.layers.0.mlp.down_proj", "model.layers.0.mlp.act_fn"),               # 1536->576
]


def _weight_and_bias(model: str, op: str) -> tuple[np.ndarray, np.ndarray | None]:
    weights = load_model(model).weights()
    bias = weights[f"{op}.bias"].double().numpy() if f"{op}.bias" in weights else None
    return weights[f"{op}.weight"].double().numpy(), bias


@pytest.mark.parametrize(("model", "op", "source"), CASES, ids=[c[1].split(".", 3)[-1] for c in CASES])
def test_real_linear_matches_torch(he_keys: Keys, model: str, op: str, source: str) -> None:
    x = capture(model, [source])[source]
    w, b = _weight_and_bias(model, op)
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
    assert packing_from_meta(p.meta()) == p
    with pytest.raises(ValueError, match="unknown packing"):
        packing_from_meta({"packing": "row-major"})


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


LANE_CASES = [  # (model, op, source, width): one chunk with bias, several input / output chunks
    ("minilm-l6", "encoder.layer.0.attention.self.query", "embeddings.LayerNorm", 512),
    ("smollm2-135m", "model.layers.0.mlp.gate_up_proj", "model.layers.0.post_attention_layernorm", 1024),
    ("smollm2-135m", "model.layers.0.mlp.down_proj", "model.layers.0.mlp.act_fn", 1024),
]


@pytest.mark.parametrize(("model", "op", "source", "width"), LANE_CASES,
                         ids=[c[1].split(".", 3)[-1] for c in LANE_CASES])
def test_lane_linear_matches_torch(he_keys: Keys, model: str, op: str, source: str, width: int) -> None:
    x = capture(model, [source])[source][-3:]  # the last three tokens, as generation sends them: a pair and one
    w, b = _weight_and_bias(model, op)
    packing = LanePacking(he_keys.ctx.slots, width)
    layer = EncryptedLinear(he_keys.ctx.cc, packing, w, b)
    batched = -(-w.shape[0] // width) * -(-w.shape[1] // width) * width
    assert layer.plaintexts == batched // packing.lanes  # lanes-times fewer than the token-batched layout's
    counts = OpCounts()
    out = layer.forward(encrypt_matrix(he_keys.ctx, he_keys.keys.public, packing, x), counts)
    assert len(out) == 2 and counts.ptmults == 2 * layer.plaintexts
    got = decrypt_matrix(he_keys.ctx, he_keys.keys.secret, packing.output, out, 3, w.shape[0])
    err = np.abs(got - (x @ w.T + (b if b is not None else 0)))
    print(f"lanes {op} {w.shape[1]}->{w.shape[0]}: max abs err {err.max():.2e}, median {np.median(err):.2e}")
    assert err.max() <= 1e-3
    # every lane of the output holds the whole result (no partial sums left for a decryptor to see)
    vec = np.array(he_keys.ctx.cc.Decrypt(out[0][0], he_keys.keys.secret).GetCKKSPackedValue())
    lanes = vec.reshape(packing.lanes, width)
    assert np.abs(lanes - lanes[0]).max() < 1e-3


COMPLEX_CASES = [  # (model, op, source, width, ring): every SmolLM2 shape as selective and private run them
    *[(m, op, src, w, ring) for m, op, src in CASES[3:] for w, ring in ((1024, 1 << 13), (1024, 1 << 14), (256, 1 << 14))],
    ("minilm-l6", "encoder.layer.0.intermediate.dense", "encoder.layer.0.attention.output.LayerNorm", 512, 1 << 14),
]


@pytest.mark.parametrize(("model", "op", "source", "width", "ring"), COMPLEX_CASES,
                         ids=[f"{c[1].split('.', 3)[-1]}-{c[3]}-N{c[4]}" for c in COMPLEX_CASES])
def test_complex_lane_linear_matches_torch(request: pytest.FixtureRequest, model: str, op: str, source: str,
                                           width: int, ring: int) -> None:
    he_keys: Keys = request.getfixturevalue("he_keys" if ring == 1 << 14 else "he_keys_8192")
    x = capture(model, [source])[source][-1:]  # one token, as each generated token travels
    w, b = _weight_and_bias(model, op)
    packing = ComplexLanePacking(he_keys.ctx.slots, width)
    layer = EncryptedLinear(he_keys.ctx.cc, packing, w, b)
    lanes = LanePacking(he_keys.ctx.slots, width)
    # two diagonals per rotation, but a complex lane covers twice the features: half the lane layout's plaintexts
    assert layer.plaintexts * 2 == -(-w.shape[0] // width) * -(-w.shape[1] // width) * width // lanes.lanes
    counts = OpCounts()
    out = layer.forward(encrypt_matrix(he_keys.ctx, he_keys.keys.public, packing, x), counts)
    n_out = -(-w.shape[0] // width)
    assert len(out) == 1 and len(out[0]) == n_out and counts.ptmults == layer.plaintexts
    assert counts.rotations == n_out * (2 * (packing.diagonals // layer.g1 - 1) + 1)  # giant steps, conjugation
    got = decrypt_matrix(he_keys.ctx, he_keys.keys.secret, packing.output, out, 1, w.shape[0])
    want = x @ w.T + (b if b is not None else 0)
    err = np.abs(got - want)
    print(f"complex lanes {op} {w.shape[1]}->{w.shape[0]} width {width}: max abs err {err.max():.2e}, "
          f"{counts.rotations} rotations, {counts.hoisted_rotations} hoisted, {counts.ptmults} multiplies")
    assert err.max() <= 1e-3
    # the lanes hold partial sums (what the he->mpc mask must cover), bounded by the gain the calibration lists
    gain = load_calibration(model, load_graph(model))["partial_outputs"][op]["gain"][f"{packing.slots}/{width}"]
    assert gain == pytest.approx(packing.partial_gain(w))
    bound = gain * np.abs(x).max() + (np.abs(b).max() if b is not None else 0)
    for ct in out[0]:
        vec = np.array(he_keys.ctx.cc.Decrypt(ct, he_keys.keys.secret).GetCKKSPackedValue())
        partial = vec.reshape(packing.lanes, width // 2)
        assert np.abs(partial - partial.sum(axis=0) / packing.lanes).max() > 1e-2  # not replicated
        assert max(np.abs(vec.real).max(), np.abs(vec.imag).max()) <= bound + 1e-3


def test_complex_lane_packing_layout() -> None:
    p = ComplexLanePacking(8192, 1024)
    assert (p.lanes, p.diagonals, p.tokens_per_ct, p.terms, p.lane_sums) == (16, 32, 1, 2, [])
    x = np.random.default_rng(2).normal(size=(2, 1500))
    vectors = p.pack(x)
    assert p.grid(2, 1500) == (2, 2) and len(vectors) == 2 and len(vectors[0]) == 2
    assert np.array_equal(p.unpack(vectors, 2, 1500), x)
    lanes = vectors[0][0].reshape(16, 512)
    for lane in range(16):  # staggered: lane l starts at complex feature 32 l; first half real, second imaginary
        assert np.array_equal(lanes[lane].real, np.roll(x[0, :512], -32 * lane))
        assert np.array_equal(lanes[lane].imag, np.roll(x[0, 512:1024], -32 * lane))
    partial = p.output
    assert not partial.linear_input and partial.lane_sums == []
    split = np.random.default_rng(3).normal(size=(16, 512)) + 1j * np.random.default_rng(4).normal(size=(16, 512))
    total = split.sum(axis=0)  # a partial output: whoever decrypts adds the lanes
    assert np.allclose(partial.unpack([[split.reshape(-1)]], 1, 1024), np.concatenate([total.real, total.imag]))
    assert np.allclose(partial.unpack(partial.pack(x), 2, 1500), x)
    for q in (p, partial):
        assert packing_from_meta(q.meta()) == q
    with pytest.raises(ValueError, match="width 128 is too narrow"):
        ComplexLanePacking(8192, 128)
    with pytest.raises(ValueError, match="does not take input packed complex-lanes-partial"):
        EncryptedLinear(None, partial, np.eye(4), None)  # type: ignore[arg-type]


def test_lane_packing_layout() -> None:
    p = LanePacking(8192, 1024)
    assert (p.lanes, p.diagonals, p.tokens_per_ct, p.lane_sums) == (8, 128, 2, [1024, 2048, 4096])
    x = np.random.default_rng(1).normal(size=(3, 1500))
    vectors = p.pack(x)
    assert p.grid(3, 1500) == (2, 2) and len(vectors) == 2 and len(vectors[0]) == 2
    assert np.array_equal(p.unpack(vectors, 3, 1500), x)
    lanes = vectors[0][0].reshape(8, 1024)
    for lane in range(8):  # staggered: lane l starts at feature 128 l; token 0 real, token 1 imaginary
        assert np.array_equal(lanes[lane].real, np.roll(x[0, :1024], -128 * lane))
        assert np.array_equal(lanes[lane].imag, np.roll(x[1, :1024], -128 * lane))
    replicated = p.output.pack(x)[1][1].reshape(8, 1024)
    assert np.array_equal(replicated.real[:, :476], np.tile(x[2, 1024:], (8, 1)))
    assert np.array_equal(p.output.unpack(p.output.pack(x), 3, 1500), x)
    for q in (p, p.output):
        assert packing_from_meta(q.meta()) == q
    with pytest.raises(ValueError, match="width 64 is too narrow"):
        LanePacking(8192, 64)
    assert not p.output.linear_input
    with pytest.raises(ValueError, match="does not take input packed lanes-replicated"):
        EncryptedLinear(None, p.output, np.eye(4), None)  # type: ignore[arg-type]


def test_input_layout_follows_token_count() -> None:
    from hsi.policy import HeZone

    zone = HeZone(kind="he", party="owner", port=1, pack_width=1024)
    assert zone.lane_max_tokens == 4
    assert input_packing(zone, 1) == ComplexLanePacking(8192, 1024)
    assert input_packing(zone.model_copy(update={"token_width": 2048}), 1) == ComplexLanePacking(8192, 2048)
    assert input_packing(zone, 2) == input_packing(zone, 4) == LanePacking(8192, 1024)
    assert input_packing(zone, 5) == Packing(8192, 1024)
    assert input_packing(zone.model_copy(update={"lane_max_tokens": 0}), 1) == Packing(8192, 1024)
    assert input_packing(zone.model_copy(update={"pack_width": 64}), 1) == Packing(8192, 64)  # too narrow for lanes
    assert input_packing(zone.model_copy(update={"pack_width": 128}), 1) == LanePacking(8192, 128)  # for complex
