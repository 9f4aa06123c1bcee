"""`/healthz`, `/readyz`, `/metrics`, and the tiny forward pass that makes a fresh service ready."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from orchestrator.http.errors import ApiError
from orchestrator.http.jobs import Cancelled, Job, OnToken
from orchestrator.http.metrics import CONTENT_TYPE
from orchestrator.http.state import ApiState
from orchestrator.runtime import RunResult

log = logging.getLogger(__name__)
WARM_UP_EVERY_S = 2.0  # how often the warm-up tries again while zones are down or the runtime is busy


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def warm_up(state: ApiState) -> None:
    """Run one tiny forward pass once every zone answers health (readiness needs it); retry until one ran."""
    rt = state.runtime

    def tiny(cancelled: Cancelled, on_token: OnToken) -> RunResult:
        if state.is_encoder:
            return rt.embed("ready", cancelled=cancelled)
        return rt.generate("ready", 1, chat=False, cancelled=cancelled)

    while not state.forward_pass_ran:
        if not await run_in_threadpool(state.health.down):
            try:
                await Job(state, tiny).run()
                log.info("ready: every zone answers and a forward pass ran")
            except ApiError as e:
                log.info("warm-up forward pass not done yet: %s", e.message)
        if not state.forward_pass_ran:
            await asyncio.sleep(WARM_UP_EVERY_S)
    state.metrics.ready.set(1)


router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 when every zone of the policy answers health and a forward pass ran since start; else 503 with why."""
    state = _state(request)
    down = await run_in_threadpool(state.health.down)
    ready = not down and state.forward_pass_ran
    state.metrics.ready.set(1 if ready else 0)
    body = {"ready": ready, "policy": state.runtime.policy.name, "zones_down": down,
            "forward_pass_ran": state.forward_pass_ran}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus' text exposition of the service's metrics."""
    return Response(_state(request).metrics.exposition(), media_type=CONTENT_TYPE)
