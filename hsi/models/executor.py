"""The plaintext executor: runs IR ops with PyTorch in float32. It is the reference for every accuracy figure."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from hsi.batch import Batch
from hsi.ir import Op, OpType


@dataclass
class SessionState:
    """Per-session state an executor keeps between steps: KV caches keyed by attention op name."""

    kv: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class StepContext:
    """What an op needs to know about the step: the absolute position of the first new token, and the batch when
    the rows are several padded sequences."""

    position_offset: int = 0
    batch: Batch | None = None


Kernel = Callable[[Op, list[torch.Tensor], list[torch.Tensor], StepContext, SessionState], torch.Tensor]
KERNELS: dict[OpType, Kernel] = {}


def kernel(op_type: OpType) -> Callable[[Kernel], Kernel]:
    """Register the plaintext kernel of an op type (one per type)."""

    def register(fn: Kernel) -> Kernel:
        if op_type in KERNELS:
            raise ValueError(f"a plain kernel for {op_type.value} is already registered")
        KERNELS[op_type] = fn
        return fn

    return register


def _split_heads(x: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    return x.view(x.shape[0], heads, head_dim).transpose(0, 1)  # (heads, T, d)


def _cached(state: SessionState, key: str, new: torch.Tensor, use_cache: bool) -> torch.Tensor:
    if not use_cache:
        return new
    past = state.kv.get(key)
    full = new if past is None else torch.cat([past, new], dim=1)
    state.kv[key] = full
    return full


@kernel(OpType.EMBED)
def _embed(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    ids = x[0].long()
    out = torch.nn.functional.embedding(ids, w[0])
    if op.params.get("style") == "bert":
        pos = (ctx.batch.positions(ctx.position_offset) if ctx.batch else
               torch.arange(ctx.position_offset, ctx.position_offset + ids.shape[0]))
        out = out + w[1][pos] + w[2][0]
    return out


@kernel(OpType.LINEAR)
def _linear(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    return torch.nn.functional.linear(x[0], w[0], w[1] if len(w) > 1 else None)


@kernel(OpType.SLICE)
def _slice(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    return x[0][..., op.params["start"]:op.params["stop"]].contiguous()


@kernel(OpType.ATTN_SCORES)
def _scores(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    p = op.params
    if ctx.batch:
        return _batched_scores(p, x[0], x[1], ctx.batch)
    q = _split_heads(x[0], p["heads"], p["head_dim"])
    k = _cached(s, op.name, _split_heads(x[1], p["kv_heads"], p["head_dim"]), p["cache"])
    k = k.repeat_interleave(p["heads"] // p["kv_heads"], dim=0)
    scores = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(p["head_dim"])
    if p["causal"]:
        t, total = q.shape[1], k.shape[1]
        rows = torch.arange(total - t, total).unsqueeze(1)
        mask = torch.arange(total).unsqueeze(0) > rows
        scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
    return scores


def _batched_scores(p: dict[str, Any], q: torch.Tensor, k: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(count, heads, width, width): each sequence's queries against its own keys, padding keys masked."""
    batch.check_attention(p)
    qs, ks = batch.split_heads(q, p["heads"], p["head_dim"]), batch.split_heads(k, p["heads"], p["head_dim"])
    scores = torch.matmul(qs, ks.transpose(2, 3)) / math.sqrt(p["head_dim"])
    return scores.masked_fill(batch.padding(), torch.finfo(scores.dtype).min)


@kernel(OpType.SOFTMAX)
def _softmax(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    return torch.softmax(x[0], dim=-1)


@kernel(OpType.ATTN_CONTEXT)
def _context(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    p = op.params
    if ctx.batch:
        out: torch.Tensor = ctx.batch.merge_heads(torch.matmul(x[0], ctx.batch.split_heads(x[1], p["heads"],
                                                                                            p["head_dim"])))
        return out
    v = _cached(s, op.name, _split_heads(x[1], p["kv_heads"], p["head_dim"]), p["cache"])
    v = v.repeat_interleave(p["heads"] // p["kv_heads"], dim=0)
    out = torch.matmul(x[0], v)  # (heads, T, d)
    return out.transpose(0, 1).reshape(out.shape[1], p["heads"] * p["head_dim"])


@kernel(OpType.ADD)
def _add(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    return x[0] + x[1]


@kernel(OpType.LAYERNORM)
def _layernorm(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x[0], (x[0].shape[-1],), w[0], w[1], op.params["eps"])


@kernel(OpType.RMSNORM)
def _rmsnorm(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    h = x[0]
    var = h.pow(2).mean(-1, keepdim=True)
    return w[0] * (h * torch.rsqrt(var + op.params["eps"]))


@kernel(OpType.GELU)
def _gelu(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    return torch.nn.functional.gelu(x[0])


@kernel(OpType.SILU_MUL)
def _silu_mul(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    return torch.nn.functional.silu(x[0]) * x[1]


def rope_tables(head_dim: int, theta: float, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The public cos/sin tables of rotary embeddings at the given positions, as HF Llama computes them."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


@kernel(OpType.ROPE)
def _rope(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    p = op.params
    t = x[0].shape[0]
    h = _split_heads(x[0], p["heads"], p["head_dim"])
    cos, sin = rope_tables(p["head_dim"], p["theta"], torch.arange(ctx.position_offset, ctx.position_offset + t))
    half = p["head_dim"] // 2
    rotated = torch.cat([-h[..., half:], h[..., :half]], dim=-1)
    out = h * cos + rotated * sin
    return out.transpose(0, 1).reshape(t, p["heads"] * p["head_dim"])


@kernel(OpType.POOL)
def _pool(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    pooled = ctx.batch.pool_weights() @ x[0] if ctx.batch else x[0].mean(dim=0)
    if op.params.get("normalize"):
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
    return pooled


@kernel(OpType.LM_HEAD)
def _lm_head(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    h = x[0][-1:] if op.params.get("last_only") else x[0]
    return torch.nn.functional.linear(h, w[0])


@kernel(OpType.SAMPLE)
def _sample(op: Op, x: list[torch.Tensor], w: list[torch.Tensor], ctx: StepContext, s: SessionState) -> torch.Tensor:
    return x[0][-1].argmax().reshape(1).to(torch.int64)


class PlainExecutor:
    """Runs a sequence of ops on plaintext tensors, with the weights it was given."""

    def __init__(self, ops: Iterable[Op], weights: Mapping[str, torch.Tensor]) -> None:
        self.ops = list(ops)
        missing = [n for op in self.ops for n in op.weights if n not in weights]
        if missing:
            raise KeyError(f"weights missing for the stage: {missing[:5]}")
        self._weights = {n: weights[n].detach().to(torch.float32) for op in self.ops for n in op.weights}

    @torch.no_grad()
    def run(
        self, tensors: dict[str, torch.Tensor], ctx: StepContext, state: SessionState, keep: Iterable[str]
    ) -> dict[str, torch.Tensor]:
        """Run every op in order; return the tensors named in `keep` (inputs plus everything produced)."""
        env = dict(tensors)
        for op in self.ops:
            missing = [t for t in op.inputs if t not in env]
            if missing:
                raise KeyError(f"op {op.name} needs tensors {missing}, which the zone does not hold")
            out = KERNELS[op.type](op, [env[t] for t in op.inputs], [self._weights[n] for n in op.weights], ctx, state)
            env[op.name] = out
        return {k: env[k] for k in keep}

