"""The order of calls one step of a plan makes, and when each zone may free each tensor it holds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.planner import CLIENT, Plan, Stage


@dataclass
class Push:
    """The client sends graph input `tensor` to `stage`'s zone."""

    tensor: str
    stage: Stage


@dataclass
class Move:
    """`src`'s zone sends `tensor` to `dst`'s zone; with `release`, the sender frees its copy afterwards."""

    tensor: str
    src: Stage
    dst: Stage
    release: bool = False


@dataclass
class Run:
    """Every process of `stage`'s zone runs it, then frees `release` (the stage was their last use there)."""

    stage: Stage
    release: list[str] = field(default_factory=list)


@dataclass
class StepProgram:
    """One step through a plan: the client's pushes, then moves and stage runs in order."""

    pushes: list[Push]
    actions: list[Move | Run]
    producer: dict[str, Stage]  # tensor -> the stage that computes it


def step_program(plan: Plan, outputs: Sequence[str]) -> StepProgram:
    """The calls of one step: each tensor moves from its producer to a zone once, before the first stage there
    that reads it; each zone frees a tensor after its last use in the step, except the graph `outputs` the client
    pulls at the end (the session's release frees those)."""
    producer = {t: s for s in plan.stages for t in s.ops}
    where: dict[str, set[str]] = defaultdict(set)
    pushes = []
    for c in plan.conversions:
        if c.from_zone == CLIENT:
            stage = plan.stages[c.to_stage]  # type: ignore[index]
            if stage.zone not in where[c.tensor]:
                pushes.append(Push(c.tensor, stage))
                where[c.tensor].add(stage.zone)
    actions: list[Move | Run] = []
    last_use: dict[tuple[str, str], Move | Run] = {}  # (zone, tensor) -> the action that reads it last
    for s in plan.stages:
        for t in s.inputs:
            if s.zone not in where[t]:
                move = Move(t, producer[t], s)
                actions.append(move)
                last_use[(producer[t].zone, t)] = move
                where[t].add(s.zone)
        run = Run(s)
        actions.append(run)
        for t in s.inputs:
            last_use[(s.zone, t)] = run
        for t in s.ops:
            where[t].add(s.zone)
    kept = set(outputs)
    for (_, t), action in last_use.items():
        if t in kept:
            continue
        if isinstance(action, Move):
            action.release = True
        else:
            action.release.append(t)
    return StepProgram(pushes, actions, producer)
