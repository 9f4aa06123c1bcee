"""What a zone kind plugs in: the engine protocols the Zone service drives, and the per-call run context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from hsi.batch import Batch
    from hsi.ir import Graph
    from hsi.plan.types import Stage
    from hsi.transport.tensor import StoredTensor


@dataclass(frozen=True)
class RunContext:
    """Per-call facts an engine needs: the session, the absolute position of the first new token, and the batch
    when the rows are several padded sequences."""

    session: str
    position_offset: int
    batch: Batch | None = None


class ZoneEngine(Protocol):
    """The engine of one zone kind inside one zone process. Engines subclass this protocol explicitly, so they
    inherit its defaults (they hold tensors; closing frees nothing)."""

    holds_tensors: bool = True  # False for a process that computes on no tensor of its own (an MPC dealer)

    def load_stage(self, stage: Stage, graph: Graph) -> None:
        """Prepare to run `stage` (load weights, encode plaintexts, ...)."""

    def run_stage(self, stage: Stage, inputs: dict[str, StoredTensor], ctx: RunContext) -> dict[str, StoredTensor]:
        """Run a loaded stage; return every tensor named in `stage.outputs`."""

    def release(self, session: str) -> None:
        """Free per-session state (KV caches)."""

    def close(self) -> None:
        """Free what the engine holds for the process (contexts, workers, keys); default: nothing."""
        return None


@runtime_checkable
class KeyedEngine(Protocol):
    """An engine that evaluates under public key material installed by the policy's key holder (HE)."""

    def key_requirements(self) -> tuple[str, list[int], str]:
        """(key handle, rotations, parameters JSON) the engine needs."""

    def install(self, data: bytes, meta: dict[str, str]) -> tuple[str, int]:
        """Install a public-material bundle; (key tag, rotation keys installed)."""


@runtime_checkable
class MaskingEngine(Protocol):
    """An engine whose ciphertexts cross to MPC shares and back through the enclave (HE)."""

    def mask(self, name: str, t: StoredTensor, bits: int) -> tuple[NDArray[Any], StoredTensor]:
        """he->mpc: (the mask r, the ciphertext of x - r)."""

    def piece(self, name: str, t: StoredTensor) -> Any:
        """mpc->he: one arriving piece (the enclave's ciphertext or the co-located party's mask), prepared."""

    def unmask(self, name: str, parts: list[Any]) -> StoredTensor:
        """mpc->he: the ciphertext of the pieces' sum."""


@runtime_checkable
class EnclaveEngine(Protocol):
    """An engine behind an enclave boundary: what enters is decrypted or unsealed, what leaves is re-encoded (TEE)."""

    def admit(self, session: str, name: str, t: StoredTensor, principal: str) -> StoredTensor:
        """A tensor arriving from `principal`, as the enclave keeps it."""

    def export(self, session: str, name: str, t: StoredTensor, to_zone: str) -> StoredTensor:
        """A kept tensor as it leaves for `to_zone` (the client pseudo-zone: the runtime)."""


@dataclass(frozen=True)
class StageTraffic:
    """What one party's stage cost in messages: CrypTen's own count (`rounds`, `bytes` sent, the dealer's messages
    included) and the exact count on its links (frames waited for from and bytes sent to the other compute parties;
    frames and bytes exchanged with the dealer)."""

    rounds: int = 0
    bytes: int = 0
    party_rounds: int = 0
    party_bytes: int = 0
    dealer_rounds: int = 0
    dealer_bytes: int = 0


@runtime_checkable
class TrafficEngine(Protocol):
    """An engine whose stages exchange messages between its parties (MPC): it reports their cost."""

    def stage_traffic(self, session: str) -> StageTraffic:
        """The cost of the session's last stage at this party."""
