"""The HE engine in-process: public-material install checks, residual add, constant multiply, level checks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from hsi.ckks.packing import input_packing
from hsi.masking import BOUNDED, bounded_share, bounded_values, uniform_mask
from hsi.policy import CkksParams, load_policy
from hsi.transport.activity import PROCESS_ACTIVITY
from hsi.transport.material import bundle
from hsi.transport.status import ZoneError
from tests.conftest import ROOT
from zones.common.ckks.crypto import KeyPair, decrypt_matrix, encrypt_matrix, generate_keys
from zones.common.ckks.material import serialize_public
from zones.common.ckks.params import Context, make_context
from zones.common.ckks.tensor import CipherTensor, from_stored
from zones.he.engine import EncodedMask, HeEngine
from zones.he.linear import OpCounts

POLICY = ROOT / "tests" / "integration" / "policies" / "he-block0-minilm.yaml"


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


@pytest.fixture
def installed() -> Iterator[tuple[HeEngine, Context, KeyPair]]:
    engine = HeEngine(load_policy(POLICY), "h", "owner")
    _, rotations, params = engine.key_requirements()
    ctx = make_context(CkksParams.model_validate_json(params))
    kp = generate_keys(ctx, rotations)
    engine.install(*bundle(serialize_public(ctx.cc, kp.public)))
    yield engine, ctx, kp
    engine.close()


@pytest.mark.parametrize("tokens", [1, 5])
def test_mpc_to_he_pieces_add_up(installed: tuple[HeEngine, Context, KeyPair], tokens: int) -> None:
    engine, ctx, kp = installed
    rng = np.random.default_rng(tokens)
    y, s = rng.normal(size=(tokens, 384)), uniform_mask((tokens, 384), 20)
    packing = input_packing(engine.spec, tokens)
    mask = engine.piece("x", bounded_share(s, 0, 2, 16))  # the owner's share, encoded before the ciphertext comes
    assert isinstance(mask, EncodedMask) and mask.packing == packing
    enclave = CipherTensor(encrypt_matrix(ctx, kp.public, packing, y - bounded_values(bounded_share(s, 0, 2, 16))),
                           packing, tokens, 384).to_stored()
    assert engine.piece("x", enclave) is enclave
    whole = from_stored(engine.unmask("x", [enclave, mask]), ctx.params.ring_dim, kp.public.GetKeyTag())
    assert np.abs(decrypt_matrix(ctx, kp.secret, packing, whole.blocks, tokens, 384) - y).max() < 1e-3

    unbounded = bounded_share(s, 0, 2, 16)
    unbounded.meta.pop(BOUNDED)
    with pytest.raises(ZoneError, match="the mask of 'x' is not a bounded") as e:
        engine.piece("x", unbounded)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ZoneError, match="must arrive as one ciphertext and one bounded share, got .*ckks.*ckks"):
        engine.unmask("x", [enclave, enclave])
    other = engine.piece("x", bounded_share(s[:, :128], 0, 2, 16))
    with pytest.raises(ZoneError, match=rf"the mask of 'x' is not a bounded share of shape \[{tokens}, 384\]"):
        engine.unmask("x", [enclave, other])


def test_he_to_mpc_masks_are_fresh_and_made_ahead(installed: tuple[HeEngine, Context, KeyPair]) -> None:
    engine, ctx, kp = installed
    x = np.random.default_rng(0).normal(size=(1, 576))
    packing = input_packing(engine.spec, 1)
    t = CipherTensor(encrypt_matrix(ctx, kp.public, packing, x), packing, 1, 576).to_stored()
    blocks, chunks = packing.grid(1, 576)
    seen = []
    for n in range(4):
        if n == 0:
            with PROCESS_ACTIVITY.serving():  # as inside a RunStage: nothing is made in the background meanwhile
                r, masked = engine.mask("x", t, 28)
            pool = engine.masks.pools[(0, 28)]
            assert pool.made_on_demand == blocks * chunks and pool.made_ahead == 0
        else:
            deadline = time.monotonic() + 10
            while pool.ready < blocks * chunks:  # the zone serves no call: the next masks are made ahead
                assert time.monotonic() < deadline
                time.sleep(0.01)
            r, masked = engine.mask("x", t, 28)
        m = from_stored(masked, ctx.params.ring_dim, kp.public.GetKeyTag())
        assert np.abs(decrypt_matrix(ctx, kp.secret, packing, m.blocks, 1, 576) + r - x).max() < 1e-3
        assert np.abs(r).max() > 2 ** 20  # x is hidden
        seen.append(r)
    assert all(not np.isin(a, b).any() for i, a in enumerate(seen) for b in seen[i + 1:])
    assert pool.made_on_demand == blocks * chunks  # only the first conversion's masks were encoded on the spot
