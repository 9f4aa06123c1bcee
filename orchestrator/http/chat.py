"""`POST /v1/chat/completions`: greedy generation from chat messages, whole or as server-sent events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from orchestrator.http.errors import ApiError, bad_request, too_long, unknown_model
from orchestrator.http.jobs import Cancelled, Job, OnToken
from orchestrator.http.schemas import ChatRequest
from orchestrator.http.state import ApiState
from orchestrator.runtime import RunError, RunResult


def budget(state: ApiState, body: ChatRequest) -> tuple[list[int], int]:
    """The prompt's token ids through the chat template and the new tokens to make; 413 past `model.max_tokens`."""
    if body.model != state.model:
        raise unknown_model(body.model, state.model)
    if state.is_encoder:
        raise bad_request(f"model {state.model} is a sentence encoder; use /v1/embeddings", param="model")
    try:
        ids = [int(t) for t in state.runtime.prompt_ids(body.template_messages())]
    except RunError as e:
        raise bad_request(str(e), param="messages") from None
    limit = state.runtime.policy.model.max_tokens
    asked = body.limit()
    room = limit - len(ids) + 1  # the last new token is never fed back
    if room < 1 or (asked is not None and asked > room):
        want = f" and max_tokens {asked}" if asked is not None else ""
        raise too_long(f"the prompt has {len(ids)} tokens{want}; the policy allows at most {limit} "
                       "(model.max_tokens)", param="messages" if room < 1 else "max_tokens")
    return ids, asked if asked is not None else min(state.settings.default_max_tokens, room)


class Detokenizer:
    """Text deltas of a growing token sequence (a character split across tokens waits for its last token)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""

    def add(self, token: int) -> str:
        """Add a token; the new text it completes."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta


def _finish(state: ApiState, tokens: list[int]) -> str:
    return "stop" if tokens and tokens[-1] == state.runtime.tokenizer.eos_token_id else "length"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _observe(state: ApiState, job: Job, prompt: int, completion: int) -> None:
    m = state.metrics
    m.tokens.labels("prompt").inc(prompt)
    m.tokens.labels("completion").inc(completion)
    if job.first_token_at is not None:
        m.ttft.observe(job.first_token_at - job.arrived)
        if completion > 1 and job.last_token_at is not None:
            m.per_token.observe((job.last_token_at - job.first_token_at) / (completion - 1))


async def create_chat(state: ApiState, body: ChatRequest, request: Request) -> JSONResponse | StreamingResponse:
    """The chat completion (or its stream) after the run through the plan."""
    arrived = time.monotonic()
    ids, new_tokens = budget(state, body)
    messages = body.template_messages()

    def work(cancelled: Cancelled, on_token: OnToken) -> RunResult:
        return state.runtime.generate(messages, new_tokens, on_token=on_token, cancelled=cancelled)

    job = Job(state, work, arrived)
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": state.model,
            "system_fingerprint": f"hsi-{state.runtime.plan.digest[:12]}"}
    await job.start(request.is_disconnected)
    if body.stream:
        first = await job.next_token(request.is_disconnected)  # errors before the first token keep their status
        return StreamingResponse(_stream(state, job, body, meta, len(ids), first), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    tokens = [t async for t in job.tokens(request.is_disconnected)]
    assert job.result is not None
    _observe(state, job, len(ids), len(tokens))
    message = {"role": "assistant", "content": job.result.output["text"], "refusal": None}
    return JSONResponse({**meta, "object": "chat.completion", "usage": _usage(len(ids), len(tokens)),
                         "choices": [{"index": 0, "message": message, "logprobs": None,
                                      "finish_reason": _finish(state, tokens)}],
                         "hsi_receipt": job.result.receipt})


def _chunk(meta: dict[str, Any], delta: dict[str, Any], finish: str | None = None,
           usage: dict[str, int] | None = None, receipt: dict[str, Any] | None = None) -> str:
    body = {**meta, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    if receipt is not None:  # the finishing chunk carries the run's signed privacy receipt
        body["hsi_receipt"] = receipt
    return f"data: {json.dumps(body)}\n\n"


async def _stream(state: ApiState, job: Job, body: ChatRequest, meta: dict[str, Any], prompt: int,
                  first: int | None) -> AsyncIterator[str]:
    """The server-sent events: the role, a content delta per token, the finishing chunk with usage, [DONE]."""
    text = Detokenizer(state.runtime.tokenizer)
    tokens: list[int] = []
    yield _chunk(meta, {"role": "assistant", "content": ""})
    try:
        token = first
        while token is not None:
            tokens.append(token)
            delta = text.add(token)
            if delta:
                yield _chunk(meta, {"content": delta})
            token = await job.next_token()  # no polling for the caller: the server cancels this task when it goes
    except ApiError as e:  # the status line is gone: the error travels as an event (OpenAI's clients raise it)
        yield e.sse()
        return
    finally:
        if job.result is None:
            job.cancel()
    assert job.result is not None
    rest = job.result.output["text"][len(text.sent):]
    if rest:
        yield _chunk(meta, {"content": rest})
    usage = _usage(prompt, len(tokens))
    _observe(state, job, prompt, len(tokens))
    yield _chunk(meta, {}, _finish(state, tokens), usage, job.result.receipt)
    if body.stream_options and body.stream_options.include_usage:
        yield f"data: {json.dumps({**meta, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"
