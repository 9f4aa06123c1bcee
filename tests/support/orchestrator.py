"""The Orchestrator gRPC service of a deployment, served in a thread for a test, and stubs to call it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hsi.policy import Policy
from hsi.transport.certs import issue, load_credentials
from hsi.transport.server import secure_channel
from orchestrator.service import serve_orchestrator
from protos import orchestrator_pb2_grpc
from tests.conftest import free_ports


@contextmanager
def orchestrator_service(policy: Policy) -> Iterator[int]:
    """`serve_orchestrator` of `policy` on a free port for the block (ready before it starts); the port."""
    port = free_ports(1)[0]
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=serve_orchestrator, args=(policy, port, stop, ready), daemon=True)
    t.start()
    assert ready.wait(60)
    try:
        yield port
    finally:
        stop.set()
        t.join(30)


def stub_as(certs: Path, principal: str, port: int) -> orchestrator_pb2_grpc.OrchestratorStub:
    """An Orchestrator stub at `port` on loopback, with a certificate issued now for `principal`."""
    issue(certs, principal, ["127.0.0.1"])
    return orchestrator_pb2_grpc.OrchestratorStub(
        secure_channel(load_credentials(certs, principal), f"127.0.0.1:{port}"))
