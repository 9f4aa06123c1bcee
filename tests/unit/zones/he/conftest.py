"""Real activations captured from the plain zone on real text, and a CKKS context with keys."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from hsi.ckks.packing import ComplexLanePacking, LanePacking, Packing
from hsi.models.executor import PlainExecutor, SessionState, StepContext
from hsi.models.registry import load_model
from hsi.policy import CkksParams
from zones.common.ckks.crypto import KeyPair, generate_keys
from zones.common.ckks.params import Context, make_context
from zones.he.linear import rotation_indices

CLINICAL = ("Patient is a 67-year-old man with type 2 diabetes, hypertension and stage 3 chronic kidney "
            "disease; started on metformin 500 mg twice daily.")


@dataclass
class Keys:
    ctx: Context
    packing: Packing
    keys: KeyPair


@pytest.fixture(scope="session")
def he_keys() -> Keys:
    ctx = make_context(CkksParams(ring_dim=1 << 14))
    packing = Packing(ctx.slots, 512)
    # and the (complex) lane layouts of the policies' widths (see test_lane_linear_matches_torch)
    layouts = [packing] + [kind(ctx.slots, w) for kind in (LanePacking, ComplexLanePacking) for w in (256, 512, 1024)]
    rotations = {r for p in layouts for r in rotation_indices(p)}
    return Keys(ctx, packing, generate_keys(ctx, sorted(rotations)))


@pytest.fixture(scope="session")
def he_keys_8192() -> Keys:
    """N=2^13 (selective-smollm2's ring) with the rotations of its complex and lane layouts, 1024 wide."""
    ctx = make_context(CkksParams(ring_dim=1 << 13))
    packing = Packing(ctx.slots, 1024)
    layouts = [packing, LanePacking(ctx.slots, 1024), ComplexLanePacking(ctx.slots, 1024)]
    return Keys(ctx, packing, generate_keys(ctx, sorted({r for p in layouts for r in rotation_indices(p)})))


def capture(model: str, names: list[str], text: str = CLINICAL) -> dict[str, np.ndarray]:
    """Intermediate activations of the plain executor on real text."""
    m = load_model(model)
    if m.graph.arch == "llama":
        text = m.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)
    ids = torch.tensor(m.tokenizer(text)["input_ids"])
    out = PlainExecutor(m.graph.ops, m.weights()).run({"input_ids": ids}, StepContext(0), SessionState(), names)
    return {k: v.double().numpy() for k, v in out.items()}
