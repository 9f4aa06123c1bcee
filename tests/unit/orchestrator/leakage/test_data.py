"""The shipped leakage data: every model's depths, its output tensor and the noise curve, in the format
hsi/leakage.py reads, stamped with commit and corpus; and the shipped selective policy admits its own figure."""

from __future__ import annotations

import pytest

from hsi.leakage import load_leakage
from hsi.models.registry import load_graph
from hsi.plan import make_plan
from hsi.policy import load_policy
from orchestrator.leakage.corpus import describe
from tests.conftest import POLICIES

SCORES = {"token_accuracy", "exact_sequence_rate", "word_f1", "sensitive_recall", "seconds"}
# the depths `make leakage` measures, the output tensor, the fidelity the noise curve keeps
EXPECTED = {"minilm-l6": ([0, 1, 2, 3, 4, 5, 6], "pool", {"cosine"}),
            "smollm2-135m": ([0, 1, 2, 3, 6, 12, 30], "logits", {"greedy_agreement"})}


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_the_shipped_data_is_complete(model: str) -> None:
    depths, final, fidelity = EXPECTED[model]
    data = load_leakage(model)
    assert data is not None and data["commit"] and data["date"] and data["eval_tokens"] > 0
    files = describe(0, 0)
    assert data["corpus"]["eval_sha256"] == files["eval_sha256"], "measured on another private-like set"
    assert data["corpus"]["train_sha256"] == files["train_sha256"], "trained on other public text"
    entries = [data["tensors"]["hidden"][str(d)] for d in depths] + [data["tensors"][final]["final"]]
    for entry in entries:
        attacks = entry["attacks"]
        assert attacks and all(set(a) == SCORES for a in attacks.values())
        assert entry["token_recovery"] == max(a["token_accuracy"] for a in attacks.values())
    sigmas = [n["sigma"] for n in data["noise"]]
    assert len(sigmas) >= 4 and sigmas == sorted(sigmas) and sigmas[0] == 0
    assert all(set(n["fidelity"]) == fidelity for n in data["noise"])


def test_the_selective_policy_admits_the_owners_measured_figure() -> None:
    policy = load_policy(POLICIES / "selective-smollm2.yaml")
    caps = [r.max_token_recovery for r in policy.privacy if r.party == "owner" and r.max_token_recovery is not None]
    plan = make_plan(load_graph("smollm2-135m"), policy)
    owner = plan.privacy["owner"].token_recovery
    assert caps and owner is not None and owner <= min(caps)
    assert plan.privacy["keyholder"].token_recovery is None
