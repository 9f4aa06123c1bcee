"""Which measured figure a plaintext tensor takes, and the planner's `max_token_recovery` rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hsi import leakage
from hsi.leakage import exposure, load_leakage
from hsi.models.registry import load_graph
from hsi.plan import PlanError, make_plan
from hsi.policy import load_policy, load_policy_text
from tests.conftest import POLICIES


def _data(model: str, hidden: dict[int, float], **final: float) -> dict[str, object]:
    def entry(x: float) -> dict[str, object]:
        return {"token_recovery": x, "attacks": {"probe": {"token_accuracy": x / 2}, "search": {"token_accuracy": x}}}
    tensors: dict[str, object] = {"hidden": {str(k): entry(v) for k, v in hidden.items()}}
    tensors.update({k: {"final": entry(v)} for k, v in final.items()})
    return {"model": model, "tensors": tensors}


def test_a_tensor_takes_the_figure_of_its_depth() -> None:
    g = load_graph("smollm2-135m")
    data = _data("smollm2-135m", {0: 1.0, 1: 0.9, 2: 0.8, 4: 0.5, 30: 0.1}, logits=0.05)
    assert exposure(g, data, "input_ids").token_recovery == 1.0  # type: ignore[union-attr]
    assert exposure(g, data, "model.embed_tokens").token_recovery == 1.0  # type: ignore[union-attr]
    inside = exposure(g, data, "model.layers.1.mlp.act_fn")  # the more revealing of depths 1 and 2
    assert inside is not None and inside.token_recovery == 0.9 and "inside block 1" in inside.measured_as
    output = exposure(g, data, "model.layers.1.mlp.residual")  # block 1's output: depth 2 itself
    assert output is not None and output.token_recovery == 0.8 and "after 2 blocks" in output.measured_as
    skipped = exposure(g, data, "model.layers.2.mlp.residual")  # depth 3 is not measured: the nearest below it
    assert skipped is not None and skipped.token_recovery == 0.8 and "nearest measured to 3" in skipped.measured_as
    assert exposure(g, data, "model.norm").token_recovery == 0.1  # type: ignore[union-attr]
    assert exposure(g, data, "lm_head").token_recovery == 0.05  # type: ignore[union-attr]
    bert = _data("minilm-l6", {0: 1.0, 6: 0.7}, pool=0.3)
    assert exposure(load_graph("minilm-l6"), bert, "pool").token_recovery == 0.3  # type: ignore[union-attr]


def test_data_for_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(_data("minilm-l6", {0: 1.0})))
    with pytest.raises(leakage.LeakageError, match="describes model 'minilm-l6', not 'smollm2-135m'"):
        load_leakage("smollm2-135m", path)
    assert load_leakage("smollm2-135m", tmp_path / "none.json") is None


def test_the_planner_reports_recovery_and_refuses_a_plan_above_the_cap(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "smollm2-135m.json"
    path.write_text(json.dumps(_data("smollm2-135m", {k: 1.0 - k / 40 for k in range(31)}, logits=0.2)))
    monkeypatch.setattr(leakage, "packaged_path", lambda model: path)
    text = (POLICIES / "selective-smollm2.yaml").read_text()
    graph = load_graph("smollm2-135m")
    plan = make_plan(graph, load_policy_text(text, "p.yaml"))
    owner = plan.privacy["owner"]
    assert owner.token_recovery == 0.95 and owner.recovered_from and "after 2 blocks" in owner.recovered_from
    assert plan.privacy["keyholder"].token_recovery is None  # it sees no plaintext activation
    capped = text.replace("privacy:\n", "privacy:\n  - {party: owner, max_token_recovery: 0.5}\n", 1)
    with pytest.raises(PlanError, match=r"party 'owner' would see model\.layers\.\d+\..*0\.95 of the input tokens "
                                        r"are recovered; the policy allows at most 0\.50"):
        make_plan(graph, load_policy_text(capped, "p.yaml"))
    monkeypatch.setattr(leakage, "packaged_path", lambda model: tmp_path / "missing.json")
    with pytest.raises(PlanError, match="no leakage is measured for model 'smollm2-135m'"):
        make_plan(graph, load_policy_text(capped, "p.yaml"))


def test_a_rule_is_one_kind_or_the_other() -> None:
    text = (POLICIES / "selective-smollm2.yaml").read_text()
    for rule in ("{party: owner}", "{party: owner, never_sees: activations, ops: '*', max_token_recovery: 0.1}",
                 "{party: owner, max_token_recovery: 1.5}"):
        with pytest.raises(ValueError, match="privacy"):
            load_policy_text(text.replace("privacy:\n", f"privacy:\n  - {rule}\n", 1), "p.yaml")
    assert load_policy(POLICIES / "selective-smollm2.yaml").privacy
