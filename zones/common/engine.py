"""What a zone kind plugs in: an engine that loads and runs stages on the tensors a zone holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from orchestrator.ir import Graph, ZoneKind
from orchestrator.planner import Stage
from orchestrator.policy import Policy
from protos import tensor_pb2 as pb
from zones.common.status import StatusError


class ZoneError(StatusError):
    """A request the zone refuses, with the gRPC status it answers with."""


@dataclass(frozen=True)
class StoredTensor:
    """A tensor held by a zone: its encoding, element type, shape, payload and encoding metadata."""

    encoding: int  # pb.Encoding value
    dtype: str
    shape: tuple[int, ...]
    data: bytes
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def encoding_name(self) -> str:
        """`plain`, `ckks`, `share` or `sealed`."""
        return pb.Encoding.Name(self.encoding).lower()  # type: ignore[arg-type,unused-ignore]


@dataclass(frozen=True)
class RunContext:
    """Per-call facts an engine needs: the session and the absolute position of the first new token."""

    session: str
    position_offset: int


class ZoneEngine(Protocol):
    """The engine of one zone kind inside one zone process."""

    def load_stage(self, stage: Stage, graph: Graph) -> None:
        """Prepare to run `stage` (load weights, encode plaintexts, ...)."""

    def run_stage(self, stage: Stage, inputs: dict[str, StoredTensor], ctx: RunContext) -> dict[str, StoredTensor]:
        """Run a loaded stage; return every tensor named in `stage.outputs`."""

    def release(self, session: str) -> None:
        """Free per-session state (KV caches)."""


class KeyedEngine(ZoneEngine, Protocol):
    """An engine that evaluates under public key material installed by the policy's key holder."""

    def key_requirements(self) -> tuple[str, list[int], str]:
        """(key handle, rotations, parameters JSON) the engine needs."""

    def install(self, data: bytes, meta: dict[str, str]) -> tuple[str, int]:
        """Install a public-material bundle; (key tag, rotation keys installed)."""


EngineFactory = Callable[[Policy, str, str], ZoneEngine]
ENGINES: dict[ZoneKind, EngineFactory] = {}


def register_engine(kind: ZoneKind) -> Callable[[EngineFactory], EngineFactory]:
    """Register the engine factory of a zone kind; refuses a second one for the same kind."""

    def register(factory: EngineFactory) -> EngineFactory:
        if kind in ENGINES:
            raise ValueError(f"an engine for zone kind {kind.value} is already registered")
        ENGINES[kind] = factory
        return factory

    return register


def engine_for(kind: ZoneKind, policy: Policy, zone: str, party: str) -> ZoneEngine:
    """A new engine for a zone; ZoneError when this build has none for the kind."""
    import zones.he.engine  # registers the engines
    import zones.mpc.engine
    import zones.plain.engine
    import zones.tee.engine  # noqa: F401

    if kind not in ENGINES:
        raise ZoneError(grpc.StatusCode.UNIMPLEMENTED,
                        f"zone kind {kind.value!r} has no engine in this build (implemented: "
                        f"{', '.join(sorted(k.value for k in ENGINES))})")
    return ENGINES[kind](policy, zone, party)
