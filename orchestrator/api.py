"""The Python API: plan, embed and generate under a policy, as functions for notebooks and services."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsi.models.registry import load_graph
from hsi.plan import Plan, make_plan
from hsi.policy import load_policy
from orchestrator.launcher import zones_up
from orchestrator.reference import compare_embeddings, compare_tokens, reference_embedding, reference_generate
from orchestrator.runtime import Progress, Runtime


def plan(policy_path: str | Path, tokens: int = 32) -> Plan:
    """The plan of a policy (stages, conversions, privacy report, cost estimated for `tokens`)."""
    policy = load_policy(policy_path)
    return make_plan(load_graph(policy.model.name), policy, tokens=tokens)


def embed(policy_path: str | Path, text: str | Sequence[str], check: bool = False,
          progress: Progress | None = None) -> dict[str, Any]:
    """Embed a text, or a list of texts in batched passes, under the policy (starting its zones if they are not
    up); the `--json` result object."""
    policy = load_policy(policy_path)
    with zones_up(policy_path):
        rt = Runtime(policy, progress=progress)
        try:
            result = (rt.embed(text) if isinstance(text, str) else rt.embed_batch(list(text))).to_dict()
        finally:
            rt.close()
    if check:
        if isinstance(text, str):
            result["reference"] = compare_embeddings(result["output"]["embedding"],
                                                     reference_embedding(policy.model.name, text))
        else:
            each = [compare_embeddings(e, reference_embedding(policy.model.name, t))
                    for e, t in zip(result["output"]["embeddings"], text, strict=True)]
            result["reference"] = {"cosine": min(c["cosine"] for c in each),
                                   "max_abs_err": max(c["max_abs_err"] for c in each), "each": each}
    return result


def generate(policy_path: str | Path, prompt: str, max_new_tokens: int = 16, chat: bool = True, check: bool = False,
             progress: Progress | None = None) -> dict[str, Any]:
    """Greedy generation under the policy (starting its zones if they are not up); the `--json` result object."""
    policy = load_policy(policy_path)
    with zones_up(policy_path):
        rt = Runtime(policy, progress=progress)
        try:
            result = rt.generate(prompt, max_new_tokens, chat=chat).to_dict()
            prompt_ids = rt.prompt_ids(prompt, chat)
        finally:
            rt.close()
    if check:
        want = reference_generate(policy.model.name, prompt_ids, max_new_tokens)
        result["reference"] = compare_tokens(result["output"]["token_ids"], want)
    return result


def check_passed(result: dict[str, Any], min_cosine: float = 0.99) -> bool:
    """True when a checked result matches the reference and the data plane matches the privacy report."""
    ref = result.get("reference", {})
    ok = ref.get("cosine", 1.0) >= min_cosine if "cosine" in ref else bool(ref.get("identical", True))
    return ok and not result["privacy"]["mismatches"]
