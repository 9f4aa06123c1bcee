"""The IR: graphs validate their order and names, digests are stable, fused linears stack their parts."""

from __future__ import annotations

import pytest
import torch

from hsi.ir import Graph, Op, OpType, fused_linear, fused_weights
from hsi.models.registry import load_graph


def test_fused_weights_stack_the_parts() -> None:
    g = Graph("m", "llama", tuple(fused_linear("f", "x", [("a", 2), ("b", 3)], has_bias=True)), ("x",), ("b",))
    state = {"a.weight": torch.ones(2, 4), "b.weight": torch.zeros(3, 4), "a.bias": torch.tensor([1.0, 2.0]),
             "b.bias": torch.tensor([3.0, 4.0, 5.0])}
    stacked = fused_weights(g, state)
    assert stacked["f.weight"].shape == (5, 4) and stacked["f.weight"][:2].eq(1).all()
    assert stacked["f.bias"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [op.params for op in g.ops[1:]] == [{"start": 0, "stop": 2}, {"start": 2, "stop": 5}]


def test_graph_validates_order_and_names() -> None:
    a = Op("a", OpType.GELU, ("x",), ("T", 4))
    with pytest.raises(ValueError, match="reads \\['y'\\] before they are written"):
        Graph("m", "bert", (Op("b", OpType.GELU, ("y",), ("T", 4)),), ("x",), ("b",))
    with pytest.raises(ValueError, match="duplicate tensor name 'a'"):
        Graph("m", "bert", (a, a), ("x",), ("a",))
    with pytest.raises(ValueError, match="output 'z' is not produced"):
        Graph("m", "bert", (a,), ("x",), ("z",))


def test_digest_is_stable() -> None:
    assert load_graph("minilm-l6").digest() == load_graph("minilm-l6").digest()
