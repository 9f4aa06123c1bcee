"""What the HTTP service's routes share: its settings, the runtime and its gate, the metrics and the zones' health."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from hsi.transport.certs import Credentials
from orchestrator.http.metrics import HttpMetrics
from orchestrator.http.queue import RuntimeGate
from orchestrator.runtime import Runtime
from orchestrator.runtime.client import ZoneClient
from orchestrator.runtime.turns import Turns


@dataclass(frozen=True)
class HttpSettings:
    """`hsi serve --http-*`: where the HTTP API listens and how much it lets wait and for how long."""

    port: int
    host: str = "127.0.0.1"
    max_waiting: int = 8  # requests that may wait for the runtime; one more is refused with 429
    deadline_s: float = 600.0  # a request's whole life, queue wait included; past it 504
    default_max_tokens: int = 64  # new tokens of a chat completion without max_tokens (capped by the policy)
    max_inputs: int = 64  # texts in one embeddings request
    api_key: str | None = None  # when set, /v1/* requires `Authorization: Bearer <api_key>`


class ZoneHealth:
    """Health checks of every zone process of the policy, over channels of its own (not the runtime's)."""

    def __init__(self, runtime: Runtime, creds: Credentials) -> None:
        self.policy = runtime.policy
        self._zones = ZoneClient(runtime.policy, creds)
        self._lock = threading.Lock()

    def down(self, timeout_s: float = 2.0) -> list[str]:
        """The processes (`zone@party at host:port`) that do not answer their health check."""
        with self._lock:
            return [f"{p.key} at {p.address}" for p in self.policy.processes()
                    if not self._zones.healthy(p.address, timeout_s)]

    def close(self) -> None:
        """Close the health channels."""
        self._zones.close()


@dataclass
class ApiState:
    """The HTTP service of one runtime: what every route reads."""

    runtime: Runtime
    gate: RuntimeGate
    metrics: HttpMetrics
    health: ZoneHealth
    settings: HttpSettings
    started: int = field(default_factory=lambda: int(time.time()))
    forward_pass_ran: bool = False  # one run succeeded since start (readiness)

    @property
    def model(self) -> str:
        """The model id clients name (the policy's model)."""
        return self.runtime.policy.model.name

    @property
    def is_encoder(self) -> bool:
        """Whether the model is a sentence encoder (embeddings) rather than a chat decoder."""
        return self.runtime.graph.arch == "bert"


def build_state(runtime: Runtime, lock: Turns, settings: HttpSettings) -> ApiState:
    """The state of an HTTP service over `runtime`, whose turn `lock` it shares with the gRPC service."""
    _ = runtime.tokenizer  # loaded now, not by the first request on the event loop
    metrics = HttpMetrics(runtime.policy.name, runtime.policy.model.name)
    gate = RuntimeGate(lock, settings.max_waiting, metrics.queue)
    return ApiState(runtime, gate, metrics, ZoneHealth(runtime, runtime.creds), settings)
