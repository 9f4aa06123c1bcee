"""The plan's types: stages, conversions, what each party sees, and the plan itself."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from hsi.errors import HsiError


class PlanError(HsiError, ValueError):
    """The policy cannot be applied to the model; the message names the rule, op and party at fault."""


@dataclass(frozen=True)
class Stage:
    """A run of consecutive ops in one zone."""

    index: int
    zone: str
    kind: str
    parties: list[str]
    ops: list[str]
    inputs: list[str]    # tensors read from outside the stage
    outputs: list[str]   # tensors read by later stages or returned to the client
    est_seconds: float
    # HE stages: linear outputs computed times 2^-k so a mask hides them (k per tensor; see masking.py)
    prescale: dict[str, int] = field(default_factory=dict)
    # MPC stages: outputs re-shared as bounded shares for an HE zone (tensor -> that HE zone)
    reshare: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    """What one process receives of a converted tensor, and how well that hides the tensor's value."""

    what: str
    hiding: str


@dataclass(frozen=True)
class Collusion:
    """Two parties (or a party and an enclave) that must not pool what they know, and what they would learn."""

    pair: list[str]
    learns: str


@dataclass(frozen=True)
class Conversion:
    """A tensor crossing from one stage's zone to another's (or from/to the client)."""

    tensor: str
    from_stage: int | None  # None: a graph input at the client
    to_stage: int | None    # None: a graph output returned to the client
    from_zone: str
    to_zone: str
    kind: str               # "<from kind>-><to kind>"
    how: str
    est_bytes: int
    hiding_bits: float | None = None   # he<->mpc: bits by which the statistical mask hides the tensor
    error_budget: float | None = None  # he<->mpc: bound on the absolute error the conversion adds
    prescale_bits: int = 0             # he->mpc: the tensor travels times 2^-prescale_bits
    sees: dict[str, Seen] = field(default_factory=dict)  # principal -> what that process receives of the tensor


@dataclass(frozen=True)
class PartyView:
    """What one party sees in plaintext, and what it sees only encrypted or shared."""

    activations: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    ciphertexts: list[str] = field(default_factory=list)
    shares: list[str] = field(default_factory=list)
    # The largest fraction of the input's tokens an attack recovers from the activations above (the model's
    # measured leakage; None where it sees none, or none was measured), and from which tensor, measured how.
    token_recovery: float | None = None
    recovered_from: str | None = None


@dataclass(frozen=True)
class Plan:
    """Everything the runtime and the zones need to run a model under a policy."""

    policy: str
    policy_digest: str
    model: str
    graph_digest: str
    client: str
    stages: list[Stage]
    conversions: list[Conversion]
    privacy: dict[str, PartyView]
    est_tokens: int
    est_seconds: float
    est_bytes: int
    warnings: list[str]
    calibration: dict[str, str] = field(default_factory=dict)  # MPC zone -> SHA-256 of its calibration
    collusion: list[Collusion] = field(default_factory=list)  # pairs whose collusion would break the plan

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-serialisable data."""
        return asdict(self)

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 of the plan; a zone refuses a runtime whose plan differs from its own. Computed once: every
        stage call carries it, and a 30-block plan takes ~30 ms to hash."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def conversion(self, tensor: str, from_zone: str, to_zone: str) -> Conversion | None:
        """The plan's move of `tensor` from one zone to another (CLIENT: the runtime), or None if it makes none."""
        return next((c for c in self.conversions
                     if c.tensor == tensor and c.from_zone == from_zone and c.to_zone == to_zone), None)

    def stage_of(self, tensor: str) -> Stage | None:
        """The stage that produces `tensor` (None for a graph input)."""
        for s in self.stages:
            if tensor in s.ops:
                return s
        return None


CLIENT = "client"  # pseudo-zone of conversions to and from the runtime

