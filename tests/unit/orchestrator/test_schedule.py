"""The step program: stage runs in plan order, each sending its outputs on, and each zone frees a tensor only after
its last use in the step."""

from __future__ import annotations

from collections import defaultdict

import pytest

from hsi.models.registry import load_graph
from hsi.plan import make_plan
from hsi.policy import load_policy
from orchestrator.schedule import step_program
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
    for run in program.runs:
        s = run.stage
        missing = [t for t in s.inputs if t not in held[s.zone]]
        assert not missing, f"stage {s.index} in {s.zone} lacks {missing}"
        held[s.zone].update(s.outputs)
        for move in run.then:
            assert move.src == s and move.tensor in s.ops, f"stage {s.index} sends {move.tensor}, not its output"
            assert move.tensor in held[s.zone], f"{s.zone} sends freed {move.tensor}"
            held[move.dst.zone].add(move.tensor)
            if move.release:
                held[s.zone].discard(move.tensor)
        held[s.zone].difference_update(run.release)
        assert not set(run.release) & set(graph.outputs)
        ran.append(s.index)
    assert ran == [s.index for s in plan.stages]
    left = {t for tensors in held.values() for t in tensors}
    assert left == set(graph.outputs) & left
    assert left, "the graph outputs stay for the client to pull"
