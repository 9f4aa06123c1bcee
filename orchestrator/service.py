"""The Orchestrator gRPC service at the client: Plan, Embed and Generate (streamed) over the runtime; beside it,
optionally, the OpenAI-compatible HTTP API (orchestrator/http/) over the same runtime."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator

import grpc

from hsi.allow import ORCHESTRATOR_SERVICE, orchestrator_allow_table
from hsi.policy import Policy
from hsi.transport.certs import certs_dir, load_credentials
from hsi.transport.server import build_server, server_options_of
from orchestrator.http.state import HttpSettings
from orchestrator.runtime import RunError, Runtime
from orchestrator.runtime.errors import ZONE_FAILURE
from orchestrator.runtime.turns import Turns
from protos import orchestrator_pb2 as opb
from protos import orchestrator_pb2_grpc

log = logging.getLogger(__name__)
_POLL_S = 0.2  # how often a call waiting for the runtime looks whether its caller is still there


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    """Runs requests through one runtime, up to `transport.max_sessions` at once, each in a session of its own. A
    caller that leaves (deadline, disconnect) stops waiting for its turn and its run stops at the next stage."""

    def __init__(self, runtime: Runtime, lock: Turns | None = None) -> None:
        self.runtime = runtime
        self._lock = lock or Turns(runtime.policy.transport.max_sessions)  # shared with the HTTP API, if served

    @contextlib.contextmanager
    def _turn(self, context: grpc.ServicerContext) -> Iterator[None]:
        """Hold the runtime for the block once it is free; CANCELLED if the caller leaves while waiting."""
        while not self._lock.acquire(timeout=_POLL_S):
            if not context.is_active():
                context.abort(grpc.StatusCode.CANCELLED, "the caller left while waiting for the runtime")
        try:
            yield
        finally:
            self._lock.release()

    def _failed(self, e: RunError) -> None:
        if e.code in ZONE_FAILURE:  # a zone may have restarted: new channels, its stages loaded again
            self.runtime.reconnect()

    def Plan(self, request: opb.PlanRequest, context: grpc.ServicerContext) -> opb.PlanReply:  # noqa: N802
        """The plan as JSON."""
        return opb.PlanReply(plan_json=json.dumps(self.runtime.plan.to_dict()))

    def Embed(self, request: opb.EmbedRequest, context: grpc.ServicerContext) -> opb.EmbedReply:  # noqa: N802
        """Embed a text, or several texts in batched passes."""
        texts = list(request.texts)
        if request.text and texts:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give either text or texts, not both")
        if not request.text and not texts:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text is empty (give a text, or several as texts)")
        empty = [i for i, t in enumerate(texts) if not t]
        if empty:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"texts[{empty[0]}] is empty")
        def gone() -> bool:
            return not context.is_active()

        try:
            with self._turn(context):
                run = self.runtime.embed_batch(texts, cancelled=gone) if texts else \
                    self.runtime.embed(request.text, cancelled=gone)
        except RunError as e:
            self._failed(e)
            context.abort(e.code, str(e))
        result = run.to_dict()
        if texts:
            return opb.EmbedReply(embeddings=[opb.Embedding(values=v) for v in result["output"]["embeddings"]],
                                  result_json=json.dumps(result))
        return opb.EmbedReply(embedding=result["output"]["embedding"], result_json=json.dumps(result))

    def Generate(self, request: opb.GenerateRequest,  # noqa: N802
                 context: grpc.ServicerContext) -> Iterator[opb.GenerateEvent]:
        """Generate greedily, streaming progress and each token id, then the result."""
        if not request.prompt:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty")
        n = request.max_new_tokens or 16
        events: list[opb.GenerateEvent] = []
        try:
            with self._turn(context):
                result = self.runtime.generate(
                    request.prompt, n, on_token=lambda t: events.append(opb.GenerateEvent(token_id=t)),
                    cancelled=lambda: not context.is_active()).to_dict()
        except RunError as e:
            self._failed(e)
            context.abort(e.code, str(e))
        for i, ev in enumerate(events):
            yield opb.GenerateEvent(progress=opb.Progress(done=i + 1, total=n, stage="token"))
            yield ev
        yield opb.GenerateEvent(result_json=json.dumps(result))


def serve_orchestrator(policy: Policy, port: int, stop: threading.Event | None = None,
                       ready: threading.Event | None = None, http: HttpSettings | None = None) -> None:
    """Serve the Orchestrator at the client's address until stopped, and with `http` the OpenAI-compatible HTTP
    API beside it over the same runtime (up to `transport.max_sessions` sessions at once; the rest wait their turn)."""
    creds = load_credentials(certs_dir(policy), policy.runtime_principal)
    runtime = Runtime(policy, certs=creds)
    lock = Turns(policy.transport.max_sessions)

    def register(server: grpc.Server) -> list[str]:
        orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(OrchestratorServicer(runtime, lock), server)
        return [ORCHESTRATOR_SERVICE]

    bind = f"{policy.parties[policy.client].address}:{port}"
    server, _, _ = build_server(creds, bind, orchestrator_allow_table(policy), register,
                                server_options_of(policy.transport))
    stop = stop or threading.Event()
    server.start()
    web = None
    if http is not None:
        from orchestrator.http.server import HttpServer  # FastAPI and uvicorn load only when asked for

        web = HttpServer(runtime, lock, http)
        try:
            web.start()
        except RuntimeError:
            server.stop(grace=0).wait()
            runtime.close()
            raise
    if ready:
        ready.set()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    log.info("stopping")
    if web is not None:
        web.stop()
    server.stop(grace=2).wait()
    runtime.close()
    log.info("stopped")
