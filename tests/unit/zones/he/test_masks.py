"""The he<->mpc conversions' masks on real CKKS ciphertexts and real MiniLM activations: the error stays within the
budget the plan states, the hiding is what the plan says, and the planner refuses masks that hide too little."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hsi.ckks.packing import AnyPacking, ComplexLanePacking, LanePacking
from hsi.masking import bounded_share, hiding_bits, prescale_for, uniform_mask
from hsi.models.registry import load_graph, load_model
from hsi.plan import PlanError, make_plan
from hsi.policy import HeZone, PolicyError, load_policy, load_policy_text
from hsi.transport.shares import combine
from tests.conftest import POLICIES
from tests.unit.zones.he.conftest import Keys, capture
from zones.common.ckks.crypto import (
    add_plain_matrix,
    decrypt_matrix,
    draw_slot_mask,
    encrypt_matrix,
    encrypt_zero,
    mask_slots,
)
from zones.he.linear import EncryptedLinear

DENSE = "encoder.layer.0.output.dense"  # outputs up to ~200: the largest MiniLM linear output


def test_uniform_mask_range_and_hiding() -> None:
    m = uniform_mask((1000, 64), 20)
    assert np.abs(m).max() <= 2 ** 20 and abs(float(m.mean())) < 2 ** 20 / 100
    assert len(np.unique(m)) == m.size
    assert hiding_bits(28, 2 ** 8) == 20 and prescale_for(28, 2 ** 10, 20) == 2 and prescale_for(28, 1.0, 20) == 0


def _masked_round_trip(he_keys: Keys, y: np.ndarray, prescale: int, mask_bits: int,
                       packing: AnyPacking | None = None) -> float:
    """he -> mpc of a linear output as the HE zone masks it (every slot): mask at level 1, decrypt, scale both
    shares back; the max abs error against the unmasked ciphertext's own decryption (the conversion's error, not
    the layer's). The last len(y) tokens."""
    ctx, keys = he_keys.ctx, he_keys.keys
    packing = packing or he_keys.packing
    x = np.asarray(capture("minilm-l6", ["encoder.layer.0.intermediate.intermediate_act_fn"])[
        "encoder.layer.0.intermediate.intermediate_act_fn"])[-len(y):]
    w = load_model("minilm-l6").weights()
    weight, bias = (w[f"{DENSE}.{p}"].double().numpy() for p in ("weight", "bias"))
    layer = EncryptedLinear(ctx.cc, packing, weight * 2.0 ** -prescale, bias * 2.0 ** -prescale)
    out = layer.forward(encrypt_matrix(ctx, keys.public, packing, x))
    r, masked = mask_slots(ctx.cc, packing.output, out, *y.shape, lambda level: draw_slot_mask(ctx.cc, mask_bits, level))
    enclave = decrypt_matrix(ctx, keys.secret, packing.output, masked, *y.shape)
    shares = [bounded_share(r, 0, 2, 16, prescale), bounded_share(enclave, 1, 2, 16, prescale)]
    exact = decrypt_matrix(ctx, keys.secret, packing.output, out, *y.shape) * 2.0 ** prescale
    assert np.abs(exact - y).max() < 1e-2  # the layer itself is right
    return float((combine(DENSE, shares).double() - torch.from_numpy(exact)).abs().max())


def test_he_to_mpc_error_within_the_plans_budget(he_keys: Keys) -> None:
    policy = load_policy(POLICIES / "private-minilm.yaml")
    plan = make_plan(load_graph("minilm-l6"), policy)
    conv = next(c for c in plan.conversions if c.tensor == DENSE and c.kind == "he->mpc")
    he = policy.zones["he"]
    assert isinstance(he, HeZone)
    assert conv.prescale_bits == 3 and conv.hiding_bits is not None and conv.hiding_bits >= 20
    y = capture("minilm-l6", [DENSE])[DENSE]
    layouts: list[tuple[AnyPacking, np.ndarray]] = [(he_keys.packing, y), (LanePacking(he_keys.ctx.slots, 512), y[-2:]),
                                                    (ComplexLanePacking(he_keys.ctx.slots, 512), y[-1:])]
    for packing, rows in layouts:
        # slot-wise masks decrypt at the full mask_bits in every layout (a replicated mask would not in lanes)
        err = _masked_round_trip(he_keys, rows, conv.prescale_bits, he.mask_bits, packing)
        print(f"he->mpc of {DENSE} (|y| <= {np.abs(y).max():.1f}), {packing.meta()['packing']}: error {err:.2e}, "
              f"budget {conv.error_budget}")
        assert conv.error_budget is not None and err <= conv.error_budget
        # two more mask bits overflow the last modulus (why a policy may not raise mask_bits past 28 here)
        assert _masked_round_trip(he_keys, rows, conv.prescale_bits, he.mask_bits + 2, packing) > 1.0


def test_mpc_to_he_error_within_the_plans_budget(he_keys: Keys) -> None:
    ctx, packing, keys = he_keys.ctx, he_keys.packing, he_keys.keys
    name = "encoder.layer.0.attention.output.LayerNorm"
    policy = load_policy(POLICIES / "private-minilm.yaml")
    conv = next(c for c in make_plan(load_graph("minilm-l6"), policy).conversions
                if c.tensor == name and c.kind == "mpc->he")
    y = capture("minilm-l6", [name])[name]
    s = uniform_mask(y.shape, policy.zones["he"].reshare_mask_bits)  # type: ignore[union-attr]
    # the enclave encrypts the keyholder's share y - s (as a fresh encryption of zero made ahead plus the share,
    # or at once); the HE zone adds the owner's s
    zeros = [encrypt_zero(ctx, keys.public) for _ in range(packing.grid(*y.shape)[0] * packing.grid(*y.shape)[1])]
    for ahead in (None, zeros.pop):
        ct = encrypt_matrix(ctx, keys.public, packing, y - s, ahead)
        summed = add_plain_matrix(ctx.cc, packing, ct, s)
        err = float(np.abs(decrypt_matrix(ctx, keys.secret, packing, summed, *y.shape) - y).max())
        print(f"mpc->he of {name}: error {err:.2e}, budget {conv.error_budget}, hiding {conv.hiding_bits} bits")
        assert conv.error_budget is not None and err <= conv.error_budget
    assert zeros == []  # one fresh encryption of zero per ciphertext


def test_masks_are_fresh_per_ciphertext(he_keys: Keys) -> None:
    ctx = he_keys.ctx
    a, b = (draw_slot_mask(ctx.cc, 28, 1) for _ in range(2))
    for m in (a, b):
        assert m.values.shape == (ctx.slots,) and np.iscomplexobj(m.values) and m.level == 1
        assert np.abs(m.values.real).max() <= 2 ** 28 and np.abs(m.values.imag).max() <= 2 ** 28
        assert np.abs(m.values.real).max() > 2 ** 27 and np.abs(m.values.imag).max() > 2 ** 27
    assert not np.isin(a.values, b.values).any()


def test_planner_refuses_masks_that_hide_too_little() -> None:
    text = (POLICIES / "private-minilm.yaml").read_text()
    with pytest.raises(PlanError, match=r"tensor 'encoder\.layer\.\d\.attention\.output\.LayerNorm' \(mpc->he.* "
                                        r"hidden by only"):
        make_plan(load_graph("minilm-l6"), load_policy_text(text.replace("reshare_mask_bits: 36", "reshare_mask_bits: 24")))
    with pytest.raises(PolicyError, match="mask_bits 30 exceeds what the last CKKS modulus holds"):
        load_policy_text(text.replace("mask_bits: 28", "mask_bits: 30"))
    plan = make_plan(load_graph("minilm-l6"), load_policy_text(text.replace("min_hiding_bits: 20", "min_hiding_bits: 24")))
    dense = next(c for c in plan.conversions if c.tensor == DENSE and c.kind == "he->mpc")
    assert dense.prescale_bits == 7 and math.isclose(dense.hiding_bits or 0, 24, abs_tol=1)  # 3 at 20 bits, +4
