"""The tee zone's stage engine: the enclave serves keys; computing stages inside it is not built yet."""

from __future__ import annotations

import grpc

from orchestrator.ir import Graph, ZoneKind
from orchestrator.planner import Stage
from orchestrator.policy import Policy
from zones.common.engine import RunContext, StoredTensor, ZoneError, register_engine


@register_engine(ZoneKind.TEE)
class TeeEngine:
    """Refuses stages with a clear error until enclave compute exists; the KeyService runs beside it."""

    def __init__(self, policy: Policy, zone: str, party: str) -> None:
        self.zone = zone

    def _refuse(self) -> ZoneError:
        return ZoneError(grpc.StatusCode.UNIMPLEMENTED,
                         f"tee zone {self.zone!r} serves the key service; running model ops in the enclave is not "
                         "built yet")

    def load_stage(self, stage: Stage, graph: Graph) -> None:
        """Refused: no enclave compute yet."""
        raise self._refuse()

    def run_stage(self, stage: Stage, inputs: dict[str, StoredTensor], ctx: RunContext) -> dict[str, StoredTensor]:
        """Refused: no enclave compute yet."""
        raise self._refuse()

    def release(self, session: str) -> None:
        """Nothing held per session."""
