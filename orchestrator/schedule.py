"""The order of calls one step of a plan makes, and when each zone may free each tensor it holds."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from hsi.plan import CLIENT, Plan, Stage


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
    """Every process of `stage`'s zone runs it, sends the tensors of `then` on (each move of one of the stage's
    outputs), then frees `release` (the stage was their last use there)."""

    stage: Stage
    then: list[Move] = field(default_factory=list)
    release: list[str] = field(default_factory=list)


@dataclass
class StepProgram:
    """One step through a plan: the client's pushes, then the stage runs in order."""

    pushes: list[Push]
    runs: list[Run]
    producer: dict[str, Stage]  # tensor -> the stage that computes it


def step_program(plan: Plan, outputs: Sequence[str]) -> StepProgram:
    """The calls of one step: each tensor moves from its producer to a zone once, right after the producer ran
    (the producing zone sends it on as part of the run); each zone frees a tensor after its last use in the step,
    except the graph `outputs` the client pulls at the end (the session's release frees those)."""
    producer = {t: s for s in plan.stages for t in s.ops}
    where: dict[str, set[str]] = defaultdict(set)
    pushes = []
    for c in plan.conversions:
        if c.from_zone == CLIENT:
            stage = plan.stages[c.to_stage]  # type: ignore[index]
            if stage.zone not in where[c.tensor]:
                pushes.append(Push(c.tensor, stage))
                where[c.tensor].add(stage.zone)
    runs = {s.index: Run(s) for s in plan.stages}
    for s in plan.stages:
        for t in s.inputs:
            if s.zone not in where[t]:
                runs[producer[t].index].then.append(Move(t, producer[t], s))
                where[t].add(s.zone)
        for t in s.ops:
            where[t].add(s.zone)
    last_use: dict[tuple[str, str], Move | Run] = {}  # (zone, tensor) -> the action that reads it last
    for run in runs.values():
        for t in run.stage.inputs:
            last_use[(run.stage.zone, t)] = run
        for move in run.then:
            last_use[(move.src.zone, move.tensor)] = move
    kept = set(outputs)
    for (_, t), action in last_use.items():
        if t in kept:
            continue
        if isinstance(action, Move):
            action.release = True
        else:
            action.release.append(t)
    return StepProgram(pushes, list(runs.values()), producer)
