"""The selective scheme on SmolLM2 across real zone processes: blocks 0-1 private (HE linears, MPC nonlinears,
the enclave converting), blocks 2-29 plain at the owner. Greedy tokens against plaintext, and what the owner saw."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.reference import compare_tokens, reference_generate
from tests.integration.conftest import Deployment, enclave_deployment
from tests.support.hsm import SoftHsm

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a mortgage is in one sentence.",
    "List three symptoms of dehydration.",
    "What should I pack for a weekend hike?",
    "Translate 'good morning' into Spanish.",
    "Give me a tip for sleeping better.",
    "What is 12 times 7?",
    "Name a famous painting by Vincent van Gogh.",
    "Why is the sky blue?",
]


@pytest.fixture(scope="module")
def selective(hsi_env: Path, softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from enclave_deployment("selective-smollm2.yaml", softhsm, tmp_path_factory, 120.0)


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_selective_smollm2_sixteen_greedy_tokens(selective: Deployment) -> None:
    rt = selective.runtime()
    matches, per_token = [], []
    try:
        for prompt in PROMPTS:
            r = rt.generate(prompt, 16)
            want = reference_generate("smollm2-135m", rt.prompt_ids(prompt), 16)
            match = compare_tokens(r.output["token_ids"], want)
            matches.append(match["identical"])
            per_token.append(r.metrics["per_token_s"])
            print(f"selective: {match['token_match']}/{len(want)} tokens, prefill {r.metrics['prefill_s']} s, "
                  f"{r.metrics['per_token_s']} s/token, {r.metrics['time_by_zone']}: {r.output['text']!r}")
            assert r.privacy["mismatches"] == []
            # the owner's plain zone receives one tensor, block 1's output (both shares, which it combines)
            received = {(x["name"], x["source_principal"]) for x in r.privacy["observed"] if x["zone"] == "plain-owner"}
            assert received == {("model.layers.1.mlp.residual", "owner/mpc"),
                                ("model.layers.1.mlp.residual", "keyholder/mpc")}
    finally:
        rt.close()
    assert sum(matches) >= 9, matches
