"""Measured leakage: how much of the input a party can recover from a plaintext activation it sees, from the
audit data that ships per model (`hsi leakage` makes it)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsi.errors import HsiError
from hsi.ir import Graph, OpType

_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers)\.(\d+)\.")
_OUTPUT_KINDS = {OpType.POOL: "pool", OpType.LM_HEAD: "logits", OpType.SAMPLE: "logits"}


class LeakageError(HsiError, LookupError):
    """Leakage data that does not fit the model it claims to describe."""


@dataclass(frozen=True)
class Exposure:
    """The measured token recovery of one plaintext tensor, and what the figure is of."""

    tensor: str
    token_recovery: float
    measured_as: str  # e.g. "hidden state after 2 blocks, attack search"


def packaged_path(model: str) -> Path:
    """Where the leakage data of a packaged model ships."""
    return Path(__file__).parent / "models" / "leakage" / f"{model}.json"


def load_leakage(model: str, path: str | Path | None = None) -> dict[str, Any] | None:
    """The leakage data of `model` (the packaged file unless `path`), or None where none was measured."""
    p = Path(path) if path else packaged_path(model)
    try:
        data: dict[str, Any] = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise LeakageError(f"cannot read the leakage data {p}: {e}") from None
    if data.get("model") != model:
        raise LeakageError(f"the leakage data {p} describes model {data.get('model')!r}, not {model!r}")
    return data


def _measured(data: dict[str, Any], kind: str, key: str) -> tuple[float, str] | None:
    entry = data.get("tensors", {}).get(kind, {}).get(key)
    if entry is None:
        return None
    attacks: dict[str, dict[str, float]] = entry.get("attacks", {})
    best = max(attacks, key=lambda a: attacks[a]["token_accuracy"]) if attacks else "?"
    return float(entry["token_recovery"]), best


def _hidden(data: dict[str, Any], depth: int) -> tuple[float, str] | None:
    """The figure of the hidden state after `depth` blocks, or of the nearest measured depth below it (where
    depths were skipped), with what it measures."""
    measured = sorted(int(k) for k in data.get("tensors", {}).get("hidden", {}))
    below = [d for d in measured if d <= depth] or measured[:1]
    if not below:
        return None
    got = _measured(data, "hidden", str(below[-1]))
    if got is None:
        return None
    nearest = f" (nearest measured to {depth})" if below[-1] != depth else ""
    return got[0], f"hidden state after {below[-1]} blocks{nearest}, attack {got[1]}"


def exposure(graph: Graph, data: dict[str, Any], tensor: str) -> Exposure | None:
    """The token recovery of plaintext tensor `tensor` of `graph`: the graph's own inputs are the text itself; a
    block's output is the hidden state after it; a tensor inside block i counts as the more revealing of the
    hidden states before and after that block; the embeddings count as depth 0, the final norm as the last
    depth; a pooled embedding, logits or sampled token as their own measurement."""
    if tensor in graph.inputs:
        return Exposure(tensor, 1.0, "the input itself")
    op = graph.op(tensor)
    if op.type in _OUTPUT_KINDS:
        got = _measured(data, _OUTPUT_KINDS[op.type], "final")
        return Exposure(tensor, got[0], f"{_OUTPUT_KINDS[op.type]}, attack {got[1]}") if got else None
    m = _BLOCK.search(tensor)
    if m is None:  # before the first block (embeddings) or after the last (the final norm)
        blocks = len({int(b.group(1)) for o in graph.ops if (b := _BLOCK.search(o.name))})
        last_block_op = max((i for i, o in enumerate(graph.ops) if _BLOCK.search(o.name)), default=-1)
        depth = blocks if graph.ops.index(op) > last_block_op else 0
        got = _hidden(data, depth)
        return Exposure(tensor, got[0], got[1]) if got else None
    i = int(m.group(1))
    last = [o.name for o in graph.ops if (b := _BLOCK.search(o.name)) and int(b.group(1)) == i][-1]
    if tensor == last:  # the block's output: the hidden state after i + 1 blocks itself
        got = _hidden(data, i + 1)
        return Exposure(tensor, got[0], got[1]) if got else None
    candidates = [g for g in (_hidden(data, i), _hidden(data, i + 1)) if g]
    if not candidates:
        return None
    best = max(candidates, key=lambda g: g[0])
    return Exposure(tensor, best[0], f"{best[1]} (inside block {i})")


def strongest(graph: Graph, data: dict[str, Any] | None, tensors: list[str]) -> Exposure | None:
    """The most revealing of `tensors` (None when none is measured, or there is no data)."""
    if data is None:
        return None
    found = [e for t in tensors if (e := exposure(graph, data, t)) is not None]
    return max(found, key=lambda e: e.token_recovery) if found else None
