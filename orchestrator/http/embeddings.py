"""`POST /v1/embeddings`: sentence embeddings of one text or a list, in batched passes through the plan, in OpenAI's
shape."""

from __future__ import annotations

import base64
import struct
from typing import Any

from fastapi import Request

from orchestrator.http.errors import bad_request, too_long, unknown_model
from orchestrator.http.jobs import Cancelled, Job, OnToken
from orchestrator.http.schemas import EmbeddingRequest
from orchestrator.http.state import ApiState
from orchestrator.runtime import RunResult


def encode(vector: list[float], encoding_format: str) -> list[float] | str:
    """An embedding as floats, or as base64 of little-endian float32 (what OpenAI's clients decode)."""
    if encoding_format == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def check(state: ApiState, body: EmbeddingRequest) -> list[int]:
    """Refuse what this service cannot answer (model, dimensions, too many or too long inputs); token counts."""
    if body.model != state.model:
        raise unknown_model(body.model, state.model)
    if not state.is_encoder:
        raise bad_request(f"model {state.model} is a chat model; use /v1/chat/completions", param="model")
    texts = body.texts()
    if len(texts) > state.settings.max_inputs:
        raise bad_request(f"{len(texts)} inputs; this server takes at most {state.settings.max_inputs} per request",
                          param="input")
    size = int(state.runtime.graph.config["hidden"])
    if body.dimensions is not None and body.dimensions != size:
        raise bad_request(f"dimensions {body.dimensions}: {state.model} embeds into {size} dimensions only",
                          param="dimensions")
    limit = state.runtime.policy.model.max_tokens
    counts = [len(state.runtime.tokenizer(t)["input_ids"]) for t in texts]
    for i, n in enumerate(counts):
        if n > limit:
            where = "input" if isinstance(body.input, str) else f"input[{i}]"
            raise too_long(f"{where} has {n} tokens; the policy allows at most {limit} (model.max_tokens)",
                           param="input")
    return counts


async def create_embeddings(state: ApiState, body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    """The embeddings response body, after each text's run through the plan."""
    counts = check(state, body)
    texts = body.texts()

    def work(cancelled: Cancelled, on_token: OnToken) -> RunResult:
        return state.runtime.embed_batch(texts, cancelled=cancelled)

    result = await Job(state, work).run(request.is_disconnected)
    state.metrics.tokens.labels("prompt").inc(sum(counts))
    data = [{"object": "embedding", "index": i, "embedding": encode(v, body.encoding_format)}
            for i, v in enumerate(result.output["embeddings"])]
    return {"object": "list", "data": data, "model": state.model,
            "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)},
            "hsi_receipt": result.receipt}  # one signed privacy receipt per batched pass
