"""Serving the HTTP API with uvicorn on a thread of its own, beside the gRPC Orchestrator service."""

from __future__ import annotations

import threading

import uvicorn

from orchestrator.http.app import create_app
from orchestrator.http.state import HttpSettings, build_state
from orchestrator.runtime import Runtime
from orchestrator.runtime.turns import Turns


class HttpServer:
    """uvicorn serving the HTTP API over `runtime` (its turn shared through `lock`) until `stop()`."""

    def __init__(self, runtime: Runtime, lock: Turns, settings: HttpSettings) -> None:
        self.state = build_state(runtime, lock, settings)
        config = uvicorn.Config(create_app(self.state), host=settings.host, port=settings.port, log_level="info",
                                access_log=False, timeout_graceful_shutdown=5, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="hsi-http", daemon=True)

    def start(self, timeout_s: float = 60) -> None:
        """Start serving; return once the socket listens (RuntimeError if uvicorn does not start)."""
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > timeout_s:
                raise RuntimeError(f"the HTTP API did not start on {self.state.settings.host}:"
                                   f"{self.state.settings.port} (see the log above)")
            self._thread.join(0.05)
            waited += 0.05

    def stop(self) -> None:
        """Stop serving (open streams get a few seconds) and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(15)
