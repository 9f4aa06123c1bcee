"""plain-smollm2: greedy generation through two zone processes with the owner's KV cache equals HF generate."""

from __future__ import annotations

import pytest

from orchestrator.reference import reference_generate
from tests.integration.conftest import Deployment


@pytest.mark.slow  # 106 s with its deployment; the plain executor's greedy decoding is tested in unit tests
@pytest.mark.parametrize("prompt", ["Write a haiku about the sea.", "Explain what a mortgage is in one sentence."])
def test_generation_matches_hf(plain_smollm2: Deployment, prompt: str) -> None:
    rt = plain_smollm2.runtime()
    try:
        r = rt.generate(prompt, max_new_tokens=16)
        want = reference_generate("smollm2-135m", rt.prompt_ids(prompt), 16)
    finally:
        rt.close()
    assert r.output["token_ids"] == want
    assert r.output["text"]
    assert r.metrics["per_token_s"] is not None and r.metrics["prefill_s"] > 0
    assert r.privacy["mismatches"] == []
    # the owner received one hidden state per step (prompt, then one token at a time)
    got = [o for o in r.privacy["observed"] if o["zone"] == "plain-owner"]
    assert all(o["name"] == "model.embed_tokens" and o["encoding"] == "plain" for o in got)
    assert len(got) == len(want)
