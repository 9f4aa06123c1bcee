"""The runtime at the client: the zone client, the lockstep fan-out, the metrics and the embed/generate runs."""

from orchestrator.runtime.errors import RunError
from orchestrator.runtime.metrics import Metrics, RunResult, observed_mismatches
from orchestrator.runtime.runtime import Progress, Runtime

__all__ = ["Metrics", "Progress", "RunError", "RunResult", "Runtime", "observed_mismatches"]
