"""The model IR: a flat, ordered list of typed ops named after the HF modules they come from."""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class ZoneKind(str, Enum):
    """The kinds of zone an op can run in."""

    HE = "he"
    MPC = "mpc"
    TEE = "tee"
    PLAIN = "plain"


class OpType(str, Enum):
    """The op types of the IR (docs/design.md, "The IR"); which zone kinds run each is in hsi.kinds."""

    EMBED = "embed"
    LINEAR = "linear"
    ATTN_SCORES = "attn_scores"
    SOFTMAX = "softmax"
    ATTN_CONTEXT = "attn_context"
    ADD = "add"
    LAYERNORM = "layernorm"
    RMSNORM = "rmsnorm"
    GELU = "gelu"
    SILU_MUL = "silu_mul"
    ROPE = "rope"
    POOL = "pool"
    LM_HEAD = "lm_head"
    SAMPLE = "sample"
    SLICE = "slice"


@dataclass(frozen=True)
class Op:
    """One typed op: reads named tensors, writes the tensor named after itself.

    `shape` is the output shape with the symbol "T" for the number of new tokens
    and "S" for the number of attended positions (past + new) in decoders.
    `weights` names the model parameters the op reads (state-dict keys, or for a fused
    linear the keys `fused_weights` derives from them).
    """

    name: str
    type: OpType
    inputs: tuple[str, ...]
    shape: tuple[int | str, ...]
    weights: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> str:
        """The name of the tensor this op writes."""
        return self.name

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form of the op."""
        d = asdict(self)
        d["type"] = self.type.value
        d["inputs"] = list(self.inputs)
        d["shape"] = list(self.shape)
        d["weights"] = list(self.weights)
        return d


@dataclass(frozen=True)
class Graph:
    """A model as an ordered op list, with its graph inputs and outputs."""

    model: str
    arch: str
    ops: tuple[Op, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: set[str] = set(self.inputs)
        for op in self.ops:
            if op.name in seen:
                raise ValueError(f"graph {self.model}: duplicate tensor name {op.name!r}")
            missing = [t for t in op.inputs if t not in seen]
            if missing:
                raise ValueError(f"graph {self.model}: op {op.name!r} reads {missing} before they are written")
            seen.add(op.name)
        for out in self.outputs:
            if out not in seen:
                raise ValueError(f"graph {self.model}: output {out!r} is not produced by any op")

    @functools.cached_property
    def _by_name(self) -> dict[str, Op]:
        return {op.name: op for op in self.ops}

    def op(self, name: str) -> Op:
        """The op called `name`; KeyError naming it when absent."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no op named {name!r} in model {self.model}") from None

    def match(self, pattern: str) -> list[Op]:
        """Ops whose name matches the glob `pattern`."""
        return [op for op in self.ops if fnmatch.fnmatchcase(op.name, pattern)]

    def consumers(self) -> dict[str, list[str]]:
        """Tensor name -> names of the ops that read it."""
        out: dict[str, list[str]] = {}
        for op in self.ops:
            for t in op.inputs:
                out.setdefault(t, []).append(op.name)
        return out

    def digest(self) -> str:
        """A SHA-256 over the op list, so two processes can prove they hold the same graph."""
        blob = json.dumps([op.to_dict() for op in self.ops], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def linear(name: str, src: str, d_out: int, has_bias: bool, params: dict[str, Any] | None = None) -> Op:
    """The linear op `name` (module `name`'s weight, and its bias if it has one) reading `src`."""
    weights = (f"{name}.weight", f"{name}.bias") if has_bias else (f"{name}.weight",)
    return Op(name, OpType.LINEAR, (src,), ("T", d_out), weights, params or {})


def fused_linear(name: str, src: str, parts: list[tuple[str, int]], has_bias: bool) -> list[Op]:
    """Linear layers `parts` (module name, output width) that read the same input, as one linear op `name` over
    their stacked weights followed by a slice op per part, named after the part, so later ops read what they
    read before. One matmul instead of several: in HE the input's rotations are shared, and the result crosses
    to the next zone as one tensor."""
    d_out = sum(width for _, width in parts)
    ops = [linear(name, src, d_out, has_bias, {"fused": [part for part, _ in parts]})]
    start = 0
    for part, width in parts:
        ops.append(Op(part, OpType.SLICE, (name,), ("T", width), params={"start": start, "stop": start + width}))
        start += width
    return ops


def fused_weights(graph: Graph, state: dict[str, Any]) -> dict[str, Any]:
    """The stacked weights (and biases) of the graph's fused linear ops, from the state dict of the parts."""
    import torch

    out = {}
    for op in graph.ops:
        parts = op.params.get("fused")
        if not parts:
            continue
        for key, suffix in zip(op.weights, ("weight", "bias"), strict=False):
            out[key] = torch.cat([state[f"{part}.{suffix}"] for part in parts], dim=0)
    return out
