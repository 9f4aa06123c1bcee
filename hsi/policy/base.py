"""The policy's error type and the strict base of its models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from hsi.errors import HsiError


class PolicyError(HsiError, ValueError):
    """A policy that cannot be used; the message lists every problem with its location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        head = f"{source}: {len(problems)} error{'s' if len(problems) != 1 else ''} in policy"
        super().__init__("\n".join([head] + [f"  {p}" for p in problems]))



class Strict(BaseModel):
    """A frozen model that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)
