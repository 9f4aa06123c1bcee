"""The HE engine in-process: public-material install checks, residual add, constant multiply, level checks."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from orchestrator.policy import CkksParams, load_policy
from zones.common.ckks.crypto import decrypt_matrix, encrypt_matrix, generate_keys
from zones.common.ckks.material import serialize_public
from zones.common.ckks.params import make_context
from zones.common.ckks.tensor import CipherTensor
from zones.common.engine import ZoneError
from zones.common.material import bundle
from zones.he.engine import HeEngine
from zones.he.linear import OpCounts

POLICY = Path(__file__).resolve().parents[2] / "integration" / "policies" / "he-block0-minilm.yaml"


def test_engine_ops_and_checks() -> None:
    policy = load_policy(POLICY)
    engine = HeEngine(policy, "h", "owner")
    key, rotations, params = engine.key_requirements()
    assert key == "ckks-main" and rotations == engine.rotations()
    with pytest.raises(ZoneError, match="has no public material for key 'ckks-main'") as e:
        engine.mul_const(None, 2.0)  # type: ignore[arg-type]
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION

    # material for another ring dimension is refused
    other = make_context(CkksParams(ring_dim=1 << 15))
    kp_other = generate_keys(other, [])
    with pytest.raises(ZoneError, match="ring dimension 32768, the policy says 16384"):
        engine.install(*bundle(serialize_public(other.cc, kp_other.public)))
    with pytest.raises(ZoneError, match="bad public-material layout"):
        engine.install(b"xx", {"parts": "nonsense"})

    ctx = make_context(CkksParams.model_validate_json(params))
    kp = generate_keys(ctx, rotations)
    tag, n = engine.install(*bundle(serialize_public(ctx.cc, kp.public)))
    assert tag == kp.public.GetKeyTag() and n == len(rotations)

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 384)), rng.normal(size=(40, 384))
    ca = CipherTensor(encrypt_matrix(ctx, kp.public, engine.packing, a), engine.packing, 40, 384)
    cb = CipherTensor(encrypt_matrix(ctx, kp.public, engine.packing, b), engine.packing, 40, 384)

    def dec(t: CipherTensor) -> np.ndarray:
        return decrypt_matrix(ctx, kp.secret, engine.packing, t.blocks, t.tokens, t.features)

    s = engine.add(ca, cb)
    assert np.abs(dec(s) - (a + b)).max() < 1e-4
    scaled = engine.mul_const(ca, 0.125)
    assert scaled.level == 1 and np.abs(dec(scaled) - a * 0.125).max() < 1e-4
    mixed = engine.add(scaled, cb)  # levels aligned automatically
    assert np.abs(dec(mixed) - (a * 0.125 + b)).max() < 1e-4
    with pytest.raises(ZoneError, match="needs one level; the input is at level 1"):
        engine.mul_const(scaled, 2.0)
    short = CipherTensor(encrypt_matrix(ctx, kp.public, engine.packing, b[:8]), engine.packing, 8, 384)
    with pytest.raises(ZoneError, match=r"cannot add tensors of shapes \[40, 384\] and \[8, 384\]"):
        engine.add(ca, short)

    # the lane layout: a linear layer's output (replicated lanes) is no linear input, and layouts do not mix
    assert engine.lane is not None
    lanes = CipherTensor(encrypt_matrix(ctx, kp.public, engine.lane, b[:8]), engine.lane, 8, 384)
    with pytest.raises(ZoneError, match="cannot add tensors packed feature-major-complex and lanes-staggered") as e:
        engine.add(short, lanes)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    out = engine.lane.output
    replicated = CipherTensor(encrypt_matrix(ctx, kp.public, out, b[:8]), out, 8, 384)
    with pytest.raises(ZoneError, match="cannot take its input packed lanes-replicated") as e:
        engine.linear(None, "encoder.layer.0.attention.self.qkv", replicated, OpCounts())  # type: ignore[arg-type]
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_insecure_policy_refused_by_engine(tmp_path: Path) -> None:
    text = POLICY.read_text().replace("ring_dim: 16384", "ring_dim: 4096")
    path = tmp_path / "weak.yaml"
    path.write_text(text)
    with pytest.raises(ZoneError, match="ring_dim 4096 .* does not reach 128-bit security") as e:
        HeEngine(load_policy(path), "h", "owner")
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    path.write_text(text.replace("depth: 1}", "depth: 1, allow_insecure: true}"))
    assert HeEngine(load_policy(path), "h", "owner").packing.slots == 2048
