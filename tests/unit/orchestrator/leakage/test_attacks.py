"""The probe and the search, on a few private-like records at depths 1 and 2 of both models, recover what the
shipped data says; the exposed tensor goes through the plan's arithmetic; the noise defence costs fidelity."""

from __future__ import annotations

import pytest
import torch

from hsi.leakage import load_leakage
from hsi.models.registry import load_graph
from orchestrator.leakage.audit import Settings, audit
from orchestrator.leakage.exposure import exposure, plan_arithmetic
from orchestrator.leakage.noise import fidelity
from orchestrator.leakage.search_decoder import _order

FEW = Settings(train=300, eval=3)  # the shipped data: 1500 sentences (fewer at depth 30), 40 records
# The probe, fitted on a fifth of the shipped run's text, may fall short of the shipped figure by this much, or
# do better on three records; the search verifies its tokens, so it must land close to the shipped figure.
TOLERANCE = {"probe": 0.12, "search": 0.05}


@pytest.mark.parametrize(("model", "depth"), [
    ("minilm-l6", 1), ("minilm-l6", 2),
    # SmolLM2: ~2 min each on the shared 2-core machine under load (user CPU ~30 s): `make test-slow`
    pytest.param("smollm2-135m", 1, marks=pytest.mark.slow), pytest.param("smollm2-135m", 2, marks=pytest.mark.slow),
])
def test_the_attacks_recover_what_the_shipped_data_says(model: str, depth: int) -> None:
    data = load_leakage(model)
    assert data is not None, f"no leakage data shipped for {model}"
    shipped = data["tensors"]["hidden"][str(depth)]["attacks"]
    got = audit(model, "hidden", depth, FEW)["attacks"]
    for name, tolerance in TOLERANCE.items():
        want, have = shipped[name]["token_accuracy"], got[name]["token_accuracy"]
        assert abs(have - want) <= tolerance, f"{model} depth {depth} {name}: {have} here, {want} shipped"


def test_the_exposed_tensor_is_named_and_rounded_as_the_plan_sends_it() -> None:
    g = load_graph("smollm2-135m")
    assert exposure(g, "hidden", 2).tensor == "model.layers.1.mlp.residual"
    assert exposure(g, "hidden", 0).tensor == "model.embed_tokens"
    assert exposure(g, "logits").key == "final"
    bert = exposure(load_graph("minilm-l6"), "hidden", 6)
    assert bert.tensor == "encoder.layer.5.output.LayerNorm" and bert.key == "6"
    x = torch.randn(4, 8)
    y = plan_arithmetic(x, bert, torch.Generator().manual_seed(0))
    assert torch.equal(y * 2**16, torch.round(y * 2**16)) and 0 < (y - x).abs().max() < 1e-4


def test_the_search_order_interleaves_the_model_and_the_probe_without_repeats() -> None:
    order = _order(torch.tensor([5, 3, 9, 1, 7]), torch.tensor([3, 4]))
    assert order.tolist() == [3, 5, 4, 9, 1, 7]


def test_noise_costs_fidelity() -> None:
    clean, noisy = fidelity("minilm-l6", 2, 0.0, 3), fidelity("minilm-l6", 2, 3.0, 3)
    assert clean["cosine"] > 0.9999 and noisy["cosine"] < clean["cosine"] - 0.01
