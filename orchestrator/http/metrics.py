"""The HTTP service's Prometheus metrics: requests, latencies, queue, sessions, and per zone and link what runs cost."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class HttpMetrics:
    """Every series of one HTTP service, in a registry of its own (several services may share a process)."""

    def __init__(self, policy: str, model: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        info = Gauge("hsi_info", "The policy and model this service serves", ["policy", "model"], registry=r)
        info.labels(policy, model).set(1)
        self.requests = Counter("hsi_http_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("hsi_http_request_seconds", "End-to-end seconds of a request (queue wait included)",
                                 ["route"], buckets=_SECONDS, registry=r)
        self.queue_wait = Histogram("hsi_queue_wait_seconds", "Seconds a request waited for the runtime",
                                    buckets=_SECONDS, registry=r)
        self.ttft = Histogram("hsi_time_to_first_token_seconds", "Seconds from a chat request to its first token",
                              buckets=_SECONDS, registry=r)
        self.per_token = Histogram("hsi_time_per_output_token_seconds",
                                   "Seconds per output token after the first (the decode steps)",
                                   buckets=_SECONDS, registry=r)
        self.runs = Counter("hsi_runs", "Runs through the plan, by outcome (ok, cancelled, failed)", ["outcome"],
                            registry=r)
        self.queue_depth = Gauge("hsi_queue_depth", "Requests waiting for the runtime", registry=r)
        self.active = Gauge("hsi_active_sessions", "Sessions running in the zones", registry=r)
        self.tokens = Counter("hsi_tokens", "Tokens processed, by kind (prompt, completion)", ["kind"], registry=r)
        self.zone_seconds = Counter("hsi_zone_seconds", "Seconds of stage compute, by zone", ["zone"], registry=r)
        self.link_bytes = Counter("hsi_link_bytes", "Bytes sent over each zone link (sender->receiver)", ["link"],
                                  registry=r)
        self.mpc_rounds = Counter("hsi_mpc_rounds", "MPC rounds between the compute parties, by zone", ["zone"],
                                  registry=r)
        self.mpc_bytes = Counter("hsi_mpc_bytes", "Bytes the MPC parties sent one another, by zone", ["zone"],
                                 registry=r)
        self.dealer_bytes = Counter("hsi_mpc_dealer_bytes", "Bytes between the MPC parties and their dealer, by zone",
                                    ["zone"], registry=r)
        self.conversion_seconds = Counter("hsi_conversion_seconds", "Seconds senders spent in conversions, by kind",
                                          ["conversion"], registry=r)
        self.ready = Gauge("hsi_ready", "1 once every zone answers health and a forward pass ran", registry=r)

    def queue(self, waiting: int, active: int) -> None:
        """Set the queue depth and active sessions (the gate calls it on every change)."""
        self.queue_depth.set(waiting)
        self.active.set(active)

    def run(self, metrics: dict[str, Any]) -> None:
        """Add what one run measured (a RunResult's `metrics`): time per zone, bytes per link, MPC rounds."""
        for zone, s in metrics.get("time_by_zone", {}).items():
            self.zone_seconds.labels(zone).inc(s)
        for link, n in metrics.get("bytes_by_link", {}).items():
            self.link_bytes.labels(link).inc(n)
        for zone, m in metrics.get("mpc", {}).items():
            self.mpc_rounds.labels(zone).inc(m["party_rounds"])
            self.mpc_bytes.labels(zone).inc(m["party_bytes"])
            self.dealer_bytes.labels(zone).inc(m["dealer_bytes"])
        for conv, s in metrics.get("time_by_conversion", {}).items():
            self.conversion_seconds.labels(conv).inc(s)

    def exposition(self) -> bytes:
        """The text exposition format of every series."""
        return generate_latest(self.registry)
