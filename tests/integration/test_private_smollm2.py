"""All 30 SmolLM2 blocks private across real zone processes: every linear in HE at the owner (the lane layout, one
token pair per ciphertext), every other op and the LM head and sampling in MPC, the enclave converting. Greedy tokens
against plaintext; no party but the client receives a plaintext activation or token id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.reference import compare_tokens, reference_generate
from tests.integration.conftest import RAW_PROMPTS, Deployment, enclave_deployment
from tests.support.hsm import SoftHsm


@pytest.fixture(scope="module")
def private(hsi_env: Path, softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from enclave_deployment("private-smollm2.yaml", softhsm, tmp_path_factory, 300.0)


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_private_smollm2_eight_greedy_tokens(private: Deployment) -> None:
    rt = private.runtime()
    matches = []
    try:
        for prompt in RAW_PROMPTS:
            ids = rt.prompt_ids(prompt, chat=False)
            r = rt.generate(prompt, 8, chat=False)
            want = reference_generate("smollm2-135m", ids, 8)
            match = compare_tokens(r.output["token_ids"], want)
            matches.append(match["identical"])
            print(f"private-smollm2: {match['token_match']}/{len(want)} tokens, prefill {r.metrics['prefill_s']} s, "
                  f"{r.metrics['per_token_s']} s/token, {r.metrics['time_by_zone']}, "
                  f"{r.metrics['time_by_conversion']}: {prompt!r} -> {r.output['text']!r}", flush=True)
            assert r.privacy["mismatches"] == []
            for x in r.privacy["observed"]:  # only the client combines anything into plaintext
                if x["party"] != "client":
                    assert x["encoding"] != "plain", x
    finally:
        rt.close()
    assert sum(matches) >= 3, matches
