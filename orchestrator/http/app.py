"""The FastAPI application: OpenAI's routes over the runtime, probes, metrics, API key, errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.http import errors
from orchestrator.http.chat import create_chat
from orchestrator.http.embeddings import create_embeddings
from orchestrator.http.metrics import HttpMetrics
from orchestrator.http.probes import router as probes
from orchestrator.http.probes import warm_up
from orchestrator.http.schemas import ChatRequest, EmbeddingRequest
from orchestrator.http.state import ApiState

ROUTES = ("/v1/embeddings", "/v1/chat/completions", "/v1/models", "/healthz", "/readyz", "/metrics")


class RequestMetrics:
    """ASGI middleware counting each request by route and status and timing it to its last byte (streams too)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, observing its status and its end."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else "/v1/models/{id}" if path.startswith("/v1/models/") else "other"
        start, status = time.monotonic(), [500]

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            if route not in ("/metrics", "/healthz", "/readyz"):
                self.metrics.latency.labels(route).observe(time.monotonic() - start)
            self.metrics.requests.labels(route, str(status[0])).inc()


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def _authorised(request: Request) -> None:
    """With an API key configured, /v1/* needs `Authorization: Bearer <key>` (what OpenAI's clients send)."""
    key = _state(request).settings.api_key
    if key is None:
        return
    got = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(got.encode(), key.encode()):
        raise errors.ApiError(401, "missing or wrong API key (Authorization: Bearer ...)", code="invalid_api_key")


def _model(state: ApiState) -> dict[str, Any]:
    return {"id": state.model, "object": "model", "created": state.started,
            "owned_by": state.runtime.policy.model.owner, "hsi_policy": state.runtime.policy.name,
            "hsi_kind": "embeddings" if state.is_encoder else "chat"}


def create_app(state: ApiState) -> FastAPI:
    """The HTTP API over `state`'s runtime; it warms up (one tiny forward pass) in the background from startup."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(warm_up(state))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            state.health.close()

    app = FastAPI(title="hsi: OpenAI-compatible private inference", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.api = state
    errors.install(app)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    app.include_router(probes)
    auth = [Depends(_authorised)]

    @app.get("/v1/models", dependencies=auth)
    async def list_models() -> dict[str, Any]:
        """The one model this service serves (its policy's)."""
        return {"object": "list", "data": [_model(state)]}

    @app.get("/v1/models/{model_id}", dependencies=auth)
    async def get_model(model_id: str) -> dict[str, Any]:
        """The model, if it is the one served."""
        if model_id != state.model:
            raise errors.ApiError(404, f"model {model_id!r} is not served here", code="model_not_found",
                                  param="model")
        return _model(state)

    @app.post("/v1/embeddings", dependencies=auth)
    async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
        """Embeddings of `input` through the plan."""
        return await create_embeddings(state, body, request)

    @app.post("/v1/chat/completions", dependencies=auth, response_model=None)
    async def chat(body: ChatRequest, request: Request) -> JSONResponse | StreamingResponse:
        """A greedy chat completion through the plan (`stream: true`: server-sent events)."""
        return await create_chat(state, body, request)

    return app
