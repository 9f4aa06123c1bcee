"""The zone-kind registry: per kind, its policy model, the op types it runs, its cost model, its wire encoding
and (registered by the data plane) its engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from hsi import cost
from hsi.ir import Op, OpType, ZoneKind
from hsi.policy.zones import HeZone, MpcZone, PlainZone, TeeZone
from protos import tensor_pb2 as pb

if TYPE_CHECKING:
    from hsi.engine import ZoneEngine
    from hsi.policy.schema import Policy

EngineFactory = Callable[["Policy", str, str], "ZoneEngine"]
View = Literal["activations", "ciphertexts", "shares"]


@dataclass(frozen=True)
class KindSpec:
    """What the planner, the privacy report, the runtime and the zones need to know of one zone kind."""

    kind: ZoneKind
    policy_model: type[PlainZone | HeZone | MpcZone | TeeZone]
    runs: frozenset[OpType]  # the op types a zone of this kind can run
    wire: int  # pb.Encoding its tensors are held and sent in
    wire_rank: int  # a conversion's wire carries the encoding of its higher-ranked side
    host_view: View  # how the zone's hosts see the tensors it holds
    in_enclave: bool  # the tensors are seen by the zone's enclave, not by its host party
    sees_weights: bool  # the zone's host holds the weights of the ops it runs in plaintext
    op_seconds: Callable[[Op, int, int, int], float]  # (op, d_in, tokens, past) -> estimated seconds
    tensor_bytes: Callable[[Op, int, int], int]  # (op, tokens, past) -> bytes of its output in this encoding
    sees: str  # who sees what, in words

    @property
    def shared(self) -> bool:
        """Whether a zone of this kind holds its tensors as additive shares, one per party."""
        return self.wire == pb.SHARE


_EVERY_OP = frozenset(OpType)
KINDS: dict[ZoneKind, KindSpec] = {}
_ENGINES: dict[ZoneKind, EngineFactory] = {}


def _register(spec: KindSpec) -> None:
    if spec.kind in KINDS:
        raise ValueError(f"zone kind {spec.kind.value} is already registered")
    KINDS[spec.kind] = spec


for _spec in (
    KindSpec(ZoneKind.PLAIN, PlainZone, _EVERY_OP, pb.PLAIN, 0, "activations", False, True,
             cost.plain_seconds, cost.plain_bytes, "the host sees everything it computes"),
    # HE runs only what CKKS evaluates exactly at low depth: plaintext-weight matmuls and additions.
    KindSpec(ZoneKind.HE, HeZone, frozenset({OpType.LINEAR, OpType.ADD}), pb.CKKS, 2, "ciphertexts", False, True,
             cost.he_seconds, cost.he_bytes, "the host sees only ciphertexts; it holds its ops' weights"),
    # An embedding lookup by a shared index would cost a comparison per vocabulary row: MPC runs everything else.
    KindSpec(ZoneKind.MPC, MpcZone, _EVERY_OP - {OpType.EMBED}, pb.SHARE, 1, "shares", False, False,
             cost.mpc_seconds, cost.mpc_bytes, "each party sees only its additive shares"),
    KindSpec(ZoneKind.TEE, TeeZone, _EVERY_OP, pb.SEALED, 0, "activations", True, True,
             cost.tee_seconds, cost.plain_bytes, "the enclave sees plaintext; its host sees nothing"),
):
    _register(_spec)


def spec(kind: ZoneKind | str) -> KindSpec:
    """The registered spec of a zone kind."""
    return KINDS[ZoneKind(kind)]


def eligible_kinds(op_type: OpType) -> frozenset[ZoneKind]:
    """The zone kinds that can run ops of `op_type`."""
    return frozenset(k for k, s in KINDS.items() if op_type in s.runs)


def register_engine(kind: ZoneKind) -> Callable[[EngineFactory], EngineFactory]:
    """Register the engine factory of a zone kind (the data plane does, per kind); refuses a second one."""

    def register(factory: EngineFactory) -> EngineFactory:
        if kind in _ENGINES:
            raise ValueError(f"an engine for zone kind {kind.value} is already registered")
        _ENGINES[kind] = factory
        return factory

    return register


def engine_factory(kind: ZoneKind) -> EngineFactory:
    """The registered engine factory of `kind`; LookupError naming the kinds that have one."""
    try:
        return _ENGINES[kind]
    except KeyError:
        raise LookupError(f"zone kind {kind.value!r} has no engine in this build (implemented: "
                          f"{', '.join(sorted(k.value for k in _ENGINES)) or 'none'})") from None
