"""The MPC kernels: every IR op on CrypTen shares, with the owner's weights secret-shared.

Each kernel runs at every compute party in lockstep and sees only shares; public inputs are the op's
parameters, its calibration entry and the token positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hsi.batch import Batch
from hsi.ir import Op, OpType
from hsi.models.executor import rope_tables
from zones.mpc import functions as fn

MASKED_SCORE = -128.0  # causal-masked logits: far below any real score, inside CrypTen exp's valid range


@dataclass
class MpcState:
    """Per-session state of one party: shared weights (shared once per session) and KV caches."""

    weights: dict[str, Any] = field(default_factory=dict)
    kv: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MpcStep:
    """Public facts of a step: the first token's position, the calibration of the model, and the batch when the
    rows are several padded sequences (their lengths are public, as a single sequence's length is)."""

    position_offset: int
    calibration: dict[str, Any]
    batch: Batch | None = None


MpcKernel = Callable[[Op, list[Any], list[Any], MpcStep, MpcState], Any]
MPC_KERNELS: dict[OpType, MpcKernel] = {}


def mpc_kernel(op_type: OpType) -> Callable[[MpcKernel], MpcKernel]:
    """Register the MPC kernel of an op type (one per type)."""

    def register(f: MpcKernel) -> MpcKernel:
        if op_type in MPC_KERNELS:
            raise ValueError(f"an MPC kernel for {op_type.value} is already registered")
        MPC_KERNELS[op_type] = f
        return f

    return register


def _crypten() -> Any:
    from zones.mpc.compat import import_crypten

    return import_crypten()


def _heads(x: Any, heads: int, head_dim: int) -> Any:
    return x.view(x.size(0), heads, head_dim).transpose(0, 1)  # (heads, T, d)


def _grouped(x: Any, heads: int, kv_heads: int) -> Any:
    """Repeat each KV head for the query heads of its group (grouped-query attention)."""
    if heads == kv_heads:
        return x
    g = heads // kv_heads
    kv, s, d = x.size()
    return x.unsqueeze(1).expand(kv, g, s, d).reshape(heads, s, d)


def _cached(state: MpcState, key: str, new: Any, use_cache: bool) -> Any:
    if not use_cache:
        return new
    past = state.kv.get(key)
    full = new if past is None else _crypten().cat([past, new], dim=1)
    state.kv[key] = full
    return full


def _calibration(op: Op, step: MpcStep) -> dict[str, Any]:
    try:
        return dict(step.calibration["ops"][op.name])
    except KeyError:
        raise KeyError(f"the MPC calibration has no entry for op {op.name!r}") from None


@mpc_kernel(OpType.LINEAR)
def _linear(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    out = w[0].apply(x[0])  # w[0]: the shared, transposed weight (d_in, d_out) with its session mask
    return out + w[1] if len(w) > 1 else out


@mpc_kernel(OpType.SLICE)
def _slice(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    return x[0][..., op.params["start"]:op.params["stop"]]  # each party slices its share: no communication


@mpc_kernel(OpType.LM_HEAD)
def _lm_head(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    h = x[0][-1:] if op.params.get("last_only") else x[0]
    return w[0].apply(h)


@mpc_kernel(OpType.ATTN_SCORES)
def _scores(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    p = op.params
    if step.batch:
        return _batched_scores(p, x[0], x[1], step.batch)
    q = _heads(x[0], p["heads"], p["head_dim"]) * (1.0 / math.sqrt(p["head_dim"]))
    k = _cached(s, op.name, _heads(x[1], p["kv_heads"], p["head_dim"]), p["cache"])
    k = _grouped(k, p["heads"], p["kv_heads"])
    scores = q.matmul(k.transpose(1, 2))  # (heads, T, S)
    if p["causal"]:
        t, total = q.size(1), k.size(1)
        rows = torch.arange(total - t, total).unsqueeze(1)
        masked = (torch.arange(total).unsqueeze(0) > rows).float()
        if bool(masked.any()):
            scores = scores * (1 - masked) + masked * MASKED_SCORE
    return scores


def _batched_scores(p: dict[str, Any], q: Any, k: Any, batch: Batch) -> Any:
    """(count, heads, width, width): each sequence's queries against its own keys, padding keys masked."""
    batch.check_attention(p)
    qs = batch.split_heads(q, p["heads"], p["head_dim"]) * (1.0 / math.sqrt(p["head_dim"]))
    scores = qs.matmul(batch.split_heads(k, p["heads"], p["head_dim"]).transpose(2, 3))
    masked = batch.padding().float().expand(*scores.size())
    return scores * (1 - masked) + masked * MASKED_SCORE


@mpc_kernel(OpType.SOFTMAX)
def _softmax(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    return fn.softmax(x[0])


@mpc_kernel(OpType.ATTN_CONTEXT)
def _context(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    p = op.params
    if step.batch:
        return step.batch.merge_heads(x[0].matmul(step.batch.split_heads(x[1], p["heads"], p["head_dim"])))
    v = _cached(s, op.name, _heads(x[1], p["kv_heads"], p["head_dim"]), p["cache"])
    v = _grouped(v, p["heads"], p["kv_heads"])
    out = x[0].matmul(v)  # (heads, T, d)
    return out.transpose(0, 1).reshape(out.size(1), p["heads"] * p["head_dim"])


@mpc_kernel(OpType.ADD)
def _add(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    return x[0] + x[1]


@mpc_kernel(OpType.LAYERNORM)
def _layernorm(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    return fn.layernorm(x[0], w[0], w[1], op.params["eps"], _calibration(op, step))


@mpc_kernel(OpType.RMSNORM)
def _rmsnorm(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    return fn.rmsnorm(x[0], w[0], op.params["eps"], _calibration(op, step))


@mpc_kernel(OpType.GELU)
def _gelu(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    return fn.gelu(x[0])


@mpc_kernel(OpType.SILU_MUL)
def _silu_mul(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    return fn.silu_mul(x[0], x[1])


@mpc_kernel(OpType.ROPE)
def _rope(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    p = op.params
    t = x[0].size(0)
    h = _heads(x[0], p["heads"], p["head_dim"])
    cos, sin = rope_tables(p["head_dim"], p["theta"], torch.arange(step.position_offset, step.position_offset + t))
    half = p["head_dim"] // 2
    rotated = _crypten().cat([h[..., half:].neg(), h[..., :half]], dim=-1)
    out = h * cos + rotated * sin
    return out.transpose(0, 1).reshape(t, p["heads"] * p["head_dim"])


@mpc_kernel(OpType.POOL)
def _pool(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    if step.batch:  # each sequence's mean: a public matrix over the rows, so no communication
        pooled = x[0].t().matmul(step.batch.pool_weights().t()).t()
        if op.params.get("normalize"):
            pooled = pooled * fn.inv_sqrt((pooled * pooled).sum(-1, keepdim=True), _calibration(op, step))
        return pooled
    pooled = x[0].mean(0)
    if op.params.get("normalize"):
        pooled = pooled * fn.inv_sqrt((pooled * pooled).sum(), _calibration(op, step))
    return pooled


@mpc_kernel(OpType.SAMPLE)
def _sample(op: Op, x: list[Any], w: list[Any], step: MpcStep, s: MpcState) -> Any:
    # Greedy: the index of the largest logit of the last position, still shared.
    return fn.argmax_index(x[0][-1]).reshape(1)


def shared_weight_shape(op: Op, index: int, hidden_in: int) -> tuple[int, ...]:
    """The shape in which an op's weight is shared (linear weights transposed): known to every party.

    `hidden_in` is the width of the op's first input.
    """
    width = op.shape[-1]
    assert isinstance(width, int)
    if op.type in (OpType.LINEAR, OpType.LM_HEAD):
        return (hidden_in, width) if index == 0 else (width,)
    if op.type in (OpType.LAYERNORM, OpType.RMSNORM):
        return (width,)
    raise ValueError(f"op {op.name!r} ({op.type.value}) takes no weights in MPC")


def prepare_weight(op: Op, index: int, w: torch.Tensor) -> torch.Tensor:
    """The owner's weight in the layout it is shared in."""
    w = w.detach().to(torch.float32)
    return w.t().contiguous() if op.type in (OpType.LINEAR, OpType.LM_HEAD) and index == 0 else w
