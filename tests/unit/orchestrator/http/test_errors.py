"""OpenAI's error shape, and the HTTP status of each kind of failed run."""

from __future__ import annotations

import json

import grpc
import pytest

from orchestrator.http.errors import ApiError, bad_request, from_run_error, queue_full, too_long, unknown_model
from orchestrator.runtime import RunError


def test_body_has_openai_fields() -> None:
    e = bad_request("temperature: sampling is not private yet", param="temperature")
    assert e.body() == {"error": {"message": "temperature: sampling is not private yet",
                                  "type": "invalid_request_error", "param": "temperature", "code": None}}
    r = e.response()
    assert r.status_code == 400 and json.loads(bytes(r.body)) == e.body()


def test_sse_error_event_carries_the_same_object() -> None:
    e = ApiError(503, "zone x down", type_="service_unavailable", code="zone_unavailable")
    line = e.sse()
    assert line.startswith("data: ") and line.endswith("\n\n")
    assert json.loads(line.removeprefix("data: ")) == e.body()


def test_statuses_of_refusals() -> None:
    assert too_long("long").status == 413 and too_long("long").code == "context_length_exceeded"
    u = unknown_model("gpt-4o", "minilm-l6")
    assert u.status == 422 and u.param == "model" and "'minilm-l6'" in u.message
    q = queue_full(8)
    assert q.status == 429 and q.type == "rate_limit_error"
    assert q.response().headers["retry-after"] == "1"


@pytest.mark.parametrize(("code", "message", "down", "status"), [
    (grpc.StatusCode.ABORTED, "zone 'plain-owner' failed RunStage: UNAVAILABLE: refused",
     ["plain-owner@owner at 127.0.0.1:1"], 503),
    (grpc.StatusCode.ABORTED, "zone 'he' failed RunStage: DEADLINE_EXCEEDED: Deadline Exceeded", [], 504),
    (grpc.StatusCode.ABORTED, "zone 'plain-owner' failed RunStage: UNAVAILABLE: reset", [], 503),
    (grpc.StatusCode.ABORTED, "zone 'mpc' failed RunStage: INTERNAL: boom", [], 500),
    (grpc.StatusCode.INVALID_ARGUMENT, "the input has 300 tokens; the policy allows at most 128 (model.max_tokens)",
     [], 413),
    (grpc.StatusCode.INVALID_ARGUMENT, "the input has no tokens", [], 400),
    (grpc.StatusCode.FAILED_PRECONDITION, "model smollm2-135m is a llama decoder; use generate", [], 400),
    (grpc.StatusCode.CANCELLED, "the run was cancelled before stage 1", [], 499),
])
def test_run_errors_map_to_statuses(code: grpc.StatusCode, message: str, down: list[str], status: int) -> None:
    e = from_run_error(RunError(message, code), down)
    assert e.status == status
    assert message in e.message


def test_a_zone_down_is_named() -> None:
    e = from_run_error(RunError("zone 'plain-owner' failed RunStage: UNAVAILABLE: x"),
                       ["plain-owner@owner at 127.0.0.1:5"])
    assert e.message.startswith("zone plain-owner@owner at 127.0.0.1:5 not answering its health check")
    assert e.code == "zone_unavailable" and e.response().headers["retry-after"] == "5"
