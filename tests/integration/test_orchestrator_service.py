"""The Orchestrator gRPC service at the client: Plan and Embed over mTLS, client-party principals only."""

from __future__ import annotations

import json
import threading

import grpc
import pytest

from hsi.transport.certs import issue, load_credentials
from hsi.transport.server import secure_channel
from orchestrator.service import serve_orchestrator
from protos import orchestrator_pb2 as opb
from protos import orchestrator_pb2_grpc
from tests.conftest import free_ports
from tests.integration.conftest import Deployment


def test_embed_through_orchestrator(plain_minilm: Deployment) -> None:
    port = free_ports(1)[0]
    stop, ready = threading.Event(), threading.Event()
    t = threading.Thread(target=serve_orchestrator, args=(plain_minilm.policy, port, stop, ready), daemon=True)
    t.start()
    assert ready.wait(60)
    try:
        for principal in ("client/app", "owner/app"):
            issue(plain_minilm.certs, principal, ["127.0.0.1"])
        app = orchestrator_pb2_grpc.OrchestratorStub(
            secure_channel(load_credentials(plain_minilm.certs, "client/app"), f"127.0.0.1:{port}"))
        plan = json.loads(app.Plan(opb.PlanRequest(), timeout=30).plan_json)
        assert plan["policy"] == "plain-minilm"
        reply = app.Embed(opb.EmbedRequest(text="Blood pressure 150/95 at rest."), timeout=120)
        assert len(reply.embedding) == 384
        assert json.loads(reply.result_json)["privacy"]["mismatches"] == []
        with pytest.raises(grpc.RpcError) as e:
            app.Embed(opb.EmbedRequest(text=""), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        owner = orchestrator_pb2_grpc.OrchestratorStub(
            secure_channel(load_credentials(plain_minilm.certs, "owner/app"), f"127.0.0.1:{port}"))
        with pytest.raises(grpc.RpcError) as e:
            owner.Embed(opb.EmbedRequest(text="x"), timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        stop.set()
        t.join(30)
