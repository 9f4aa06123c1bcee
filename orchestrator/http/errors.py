"""Errors in OpenAI's JSON shape (`{"error": {message, type, param, code}}`) and the HTTP status of each failure."""

from __future__ import annotations

import json
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.runtime import RunError

CLIENT_GONE = 499  # nginx's "client closed request": logged and counted, never read by anyone


class ApiError(Exception):
    """A refused or failed request: its HTTP status and the fields of OpenAI's error object."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON body: `{"error": {"message", "type", "param", "code"}}`."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The JSON response (with `Retry-After` on 429 and 503)."""
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)

    def sse(self) -> str:
        """The error as a server-sent event, for a failure after a stream began."""
        return f"data: {json.dumps(self.body())}\n\n"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """400: a malformed request or a field hsi does not honour."""
    return ApiError(400, message, code=code, param=param)


def too_long(message: str, param: str = "messages") -> ApiError:
    """413: the input (with the tokens to generate) is longer than the policy's `model.max_tokens`."""
    return ApiError(413, message, code="context_length_exceeded", param=param)


def unknown_model(name: str, served: str) -> ApiError:
    """422: a model this server does not serve."""
    return ApiError(422, f"model {name!r} is not served here; this server serves {served!r} (GET /v1/models)",
                    code="model_not_found", param="model")


def queue_full(waiting: int) -> ApiError:
    """429: the queue in front of the runtime is full."""
    return ApiError(429, f"the queue is full ({waiting} requests waiting for the runtime); retry later",
                    type_="rate_limit_error", code="queue_full", retry_after=1)


def zones_down(down: list[str], cause: str) -> ApiError:
    """503: zones of the policy do not answer, named."""
    return ApiError(503, f"zone {', '.join(down)} not answering its health check; the run failed: {cause}",
                    type_="service_unavailable", code="zone_unavailable", retry_after=5)


def deadline(message: str) -> ApiError:
    """504: the request's deadline passed (waiting in the queue, or a zone call's deadline)."""
    return ApiError(504, message, type_="timeout", code="deadline_exceeded")


def from_run_error(e: RunError, down: list[str]) -> ApiError:
    """The HTTP answer to a failed run; `down` names the zone processes not answering health after it."""
    msg = str(e)
    if down:
        return zones_down(down, msg)
    if e.code == grpc.StatusCode.CANCELLED:
        return ApiError(CLIENT_GONE, msg, code="cancelled")
    if e.code == grpc.StatusCode.INVALID_ARGUMENT:
        return too_long(msg) if "model.max_tokens" in msg else bad_request(msg)
    if e.code == grpc.StatusCode.FAILED_PRECONDITION:
        return bad_request(msg, param="model")
    if e.code == grpc.StatusCode.DEADLINE_EXCEEDED or "DEADLINE_EXCEEDED" in msg:
        return deadline(msg)
    if "UNAVAILABLE" in msg:  # a zone that failed its call but answers health again: it restarted under the run
        return ApiError(503, msg, type_="service_unavailable", code="zone_unavailable", retry_after=1)
    return ApiError(500, msg, type_="server_error", code="run_failed")


def _validation(exc: RequestValidationError) -> ApiError:
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {"msg": "invalid request"}
    if first.get("type") == "json_invalid":
        ctx: dict[str, Any] = first.get("ctx") or {}
        return bad_request(f"the body is not valid JSON: {ctx.get('error', '')}".strip())
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        msg = "unrecognized request argument (hsi refuses fields it does not honour)"
    param = ".".join(loc) or None
    return bad_request(f"{param}: {msg}" if param else msg, param=param)


def install(app: FastAPI) -> None:
    """Answer every error of `app` in OpenAI's shape: ApiError, validation (400), unknown routes, the rest (500)."""

    async def api(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation(exc).response()

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None
                        ).response()

    async def other(request: Request, exc: Exception) -> JSONResponse:
        return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type_="server_error").response()

    app.add_exception_handler(ApiError, api)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, other)
