"""The step program: calls in plan order, and each zone frees a tensor only after its last use in the step."""

from __future__ import annotations

from collections import defaultdict

import pytest

from orchestrator.models.registry import load_graph
from orchestrator.planner import make_plan
from orchestrator.policy import load_policy
from orchestrator.schedule import Move, Run, step_program
from tests.conftest import POLICIES

PLANS = ["private-minilm", "all-mpc-minilm", "enclave-minilm", "private-smollm2", "selective-smollm2",
         "plain-smollm2"]


@pytest.mark.parametrize("name", PLANS)
def test_every_read_comes_before_the_release(name: str) -> None:
    """Replay the program: no zone reads or sends a tensor it freed, every stage finds its inputs, and every
    tensor but the graph outputs is freed by the end of the step."""
    policy = load_policy(POLICIES / f"{name}.yaml")
    graph = load_graph(policy.model.name)
    plan = make_plan(graph, policy)
    program = step_program(plan, graph.outputs)
    held: dict[str, set[str]] = defaultdict(set)  # zone -> tensors it holds
    for push in program.pushes:
        held[push.stage.zone].add(push.tensor)
    ran = []
    for action in program.actions:
        if isinstance(action, Move):
            assert action.tensor in held[action.src.zone], f"{action.src.zone} sends freed {action.tensor}"
            held[action.dst.zone].add(action.tensor)
            if action.release:
                held[action.src.zone].discard(action.tensor)
            continue
        assert isinstance(action, Run)
        s = action.stage
        missing = [t for t in s.inputs if t not in held[s.zone]]
        assert not missing, f"stage {s.index} in {s.zone} lacks {missing}"
        held[s.zone].update(s.outputs)
        held[s.zone].difference_update(action.release)
        assert not set(action.release) & set(graph.outputs)
        ran.append(s.index)
    assert ran == [s.index for s in plan.stages]
    left = {t for tensors in held.values() for t in tensors}
    assert left == set(graph.outputs) & left
    assert left, "the graph outputs stay for the client to pull"
