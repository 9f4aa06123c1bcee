"""The Orchestrator gRPC service at the client: Plan and Embed over mTLS, client-party principals only."""

from __future__ import annotations

import json
import os
import signal
import uuid

import grpc
import pytest

from hsi.transport.certs import load_credentials
from hsi.transport.server import secure_channel
from orchestrator.launcher import running, up
from orchestrator.runtime import RunError
from protos import orchestrator_pb2 as opb
from protos import orchestrator_pb2_grpc, zone_pb2, zone_pb2_grpc
from tests.integration.conftest import Deployment
from tests.support.certs import signed_as
from tests.support.orchestrator import orchestrator_service, stub_as


def test_embed_through_orchestrator(plain_minilm: Deployment) -> None:
    with orchestrator_service(plain_minilm.policy) as port:
        app = stub_as(plain_minilm.certs, "client/app", port)
        plan = json.loads(app.Plan(opb.PlanRequest(), timeout=30).plan_json)
        assert plan["policy"] == "plain-minilm"
        reply = app.Embed(opb.EmbedRequest(text="Blood pressure 150/95 at rest."), timeout=120)
        assert len(reply.embedding) == 384
        assert json.loads(reply.result_json)["privacy"]["mismatches"] == []
        with pytest.raises(grpc.RpcError) as e:
            app.Embed(opb.EmbedRequest(text=""), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        owner = stub_as(plain_minilm.certs, "owner/app", port)
        with pytest.raises(grpc.RpcError) as e:
            owner.Embed(opb.EmbedRequest(text="x"), timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_embed_of_several_texts_runs_batched_passes_equal_to_each_text_alone(plain_minilm: Deployment) -> None:
    texts = ["Blood pressure 150/95 at rest.", "Wire 25,000 EUR to the escrow account before Friday.",
             "It rained all weekend."]
    with orchestrator_service(plain_minilm.policy) as port:
        app = stub_as(plain_minilm.certs, "client/app", port)
        reply = app.Embed(opb.EmbedRequest(texts=texts), timeout=120)
        assert not reply.embedding and len(reply.embeddings) == 3
        result = json.loads(reply.result_json)
        assert len(result["receipt"]) == 1 and result["output"]["tokens"][0] < result["output"]["tokens"][1]
        for text, got in zip(texts, reply.embeddings, strict=True):
            alone = app.Embed(opb.EmbedRequest(text=text), timeout=120).embedding
            assert max(abs(a - b) for a, b in zip(got.values, alone, strict=True)) < 1e-5
        for bad, why in [(opb.EmbedRequest(text="x", texts=["y"]), "either text or texts"),
                         (opb.EmbedRequest(texts=["x", ""]), "texts[1] is empty"),
                         (opb.EmbedRequest(texts=["x", "blood pressure " * 100]), "text 1 has")]:
            with pytest.raises(grpc.RpcError) as e:
                app.Embed(bad, timeout=60)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in e.value.details()


def test_refusals_carry_the_right_codes_and_a_name_without_a_zone_is_no_principal(plain_minilm: Deployment) -> None:
    with orchestrator_service(plain_minilm.policy) as port:
        app = stub_as(plain_minilm.certs, "client/app", port)
        with pytest.raises(grpc.RpcError) as e:
            app.Embed(opb.EmbedRequest(text="blood pressure " * 100), timeout=60)  # more than max_tokens 128
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model.max_tokens" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            list(app.Generate(opb.GenerateRequest(prompt="Hello", max_new_tokens=2), timeout=60))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "use embed" in e.value.details()
        # a CA-signed name without a zone: the party row client/* must not match it
        bare = orchestrator_pb2_grpc.OrchestratorStub(
            secure_channel(signed_as(plain_minilm.certs, "client"), f"127.0.0.1:{port}"))
        with pytest.raises(grpc.RpcError) as e:
            bare.Embed(opb.EmbedRequest(text="x"), timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not a <party>/<zone> principal" in e.value.details()


def test_a_cancelled_run_stops_between_stages_and_frees_its_session(plain_minilm: Deployment,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    session = uuid.UUID(int=7)
    monkeypatch.setattr(uuid, "uuid4", lambda: session)  # the runtime's session id, to look it up afterwards
    rt = plain_minilm.runtime()
    asked: list[int] = []

    def cancelled() -> bool:  # the caller leaves after the first stage ran
        asked.append(1)
        return len(asked) > 1

    try:
        with pytest.raises(RunError, match="cancelled before stage 1") as e:
            rt.embed("Blood pressure 150/95 at rest.", cancelled=cancelled)
        assert e.value.code == grpc.StatusCode.CANCELLED
        first = plain_minilm.policy.zone_endpoints("embed-client")["client"]
        stub = zone_pb2_grpc.ZoneStub(secure_channel(load_credentials(plain_minilm.certs, "client/runtime"), first))
        # the first stage ran there, and the runtime released the session: nothing of it is left
        assert stub.Records(zone_pb2.RecordsRequest(session=session.hex), timeout=10).receipts == []
        assert stub.Release(zone_pb2.ReleaseRequest(session=session.hex), timeout=10).freed_tensors == 0
    finally:
        rt.close()


def test_after_a_zone_restarts_the_next_call_succeeds(plain_minilm: Deployment) -> None:
    # the service reconnects and reloads its stages after a run that failed on a zone
    with orchestrator_service(plain_minilm.policy) as port:
        app = stub_as(plain_minilm.certs, "client/app", port)
        assert len(app.Embed(opb.EmbedRequest(text="Before."), timeout=120).embedding) == 384
        pids = running(plain_minilm.policy)
        assert pids is not None
        os.killpg(pids["plain-owner@owner"], signal.SIGKILL)
        with pytest.raises(grpc.RpcError) as e:
            app.Embed(opb.EmbedRequest(text="While the owner is down."), timeout=120)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)
        assert "plain-owner" in (e.value.details() or "")
        up(plain_minilm.path)  # restarts only the dead zone, which has loaded no stage
        assert len(app.Embed(opb.EmbedRequest(text="After."), timeout=120).embedding) == 384
