"""The all-MPC SmolLM2 (CrypTen-only baseline): greedy generation equal to plaintext's (slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.reference import reference_generate
from tests.integration.conftest import RAW_PROMPTS, Deployment, deployment


@pytest.fixture(scope="module")
def all_mpc_smollm2(hsi_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from deployment("all-mpc-smollm2.yaml", tmp_path_factory)


@pytest.mark.slow
@pytest.mark.timeout(7200)  # 4 prompts x 8 tokens at about a minute per token
def test_all_mpc_greedy_tokens_match_plaintext(all_mpc_smollm2: Deployment) -> None:
    rt = all_mpc_smollm2.runtime()
    matches = []
    try:
        for prompt in RAW_PROMPTS:
            ids = rt.prompt_ids(prompt, chat=False)
            want = reference_generate("smollm2-135m", ids, 8)
            r = rt.generate(prompt, max_new_tokens=8, chat=False)
            got = r.output["token_ids"]
            print(f"{prompt!r}: {r.output['text']!r} (prefill {r.metrics['prefill_s']} s, "
                  f"{r.metrics['per_token_s']} s/token, {r.metrics['mpc']})", flush=True)
            matches.append(got == want)
            assert r.privacy["mismatches"] == []
    finally:
        rt.close()
    assert sum(matches) >= 3, f"only {sum(matches)} of {len(RAW_PROMPTS)} prompts matched plaintext"
