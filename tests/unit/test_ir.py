"""The BERT and Llama adapters produce the op lists of DESIGN.md §3, named after the HF modules."""

from __future__ import annotations

import pytest
import torch

from orchestrator.ir import ELIGIBLE_KINDS, Graph, Op, OpType, ZoneKind, fused_linear, fused_weights
from orchestrator.models.registry import ModelNotFound, load_graph, resolve


def test_minilm_graph() -> None:
    g = load_graph("minilm-l6")
    assert g.arch == "bert" and g.inputs == ("input_ids",) and g.outputs == ("pool",)
    assert len(g.ops) == 2 + 6 * 15 + 1
    qkv = g.op("encoder.layer.0.attention.self.qkv")
    assert qkv.type == OpType.LINEAR and qkv.shape == ("T", 1152) and qkv.inputs == ("embeddings.LayerNorm",)
    assert qkv.weights == ("encoder.layer.0.attention.self.qkv.weight", "encoder.layer.0.attention.self.qkv.bias")
    q = g.op("encoder.layer.0.attention.self.query")
    assert q.type == OpType.SLICE and q.shape == ("T", 384) and q.params == {"start": 0, "stop": 384}
    assert g.op("encoder.layer.5.intermediate.dense").shape == ("T", 1536)
    assert g.op("encoder.layer.5.intermediate.intermediate_act_fn").type == OpType.GELU
    assert g.op("encoder.layer.3.attention.self.scores").shape == (12, "T", "S")
    types = {op.type for op in g.ops}
    assert types == {OpType.EMBED, OpType.LAYERNORM, OpType.LINEAR, OpType.ATTN_SCORES, OpType.SOFTMAX,
                     OpType.ATTN_CONTEXT, OpType.ADD, OpType.GELU, OpType.POOL, OpType.SLICE}


def test_smollm2_graph() -> None:
    g = load_graph("smollm2-135m")
    assert g.arch == "llama" and g.outputs == ("sample",)
    assert g.config == {"hidden": 576, "heads": 9, "kv_heads": 3, "head_dim": 64, "layers": 30,
                        "intermediate": 1536, "vocab": 49152}
    assert g.op("model.layers.0.self_attn.k_proj").shape == ("T", 192)
    # the linears that read one input run as one: q|k|v and gate|up stacked, each part a slice of the result
    qkv = g.op("model.layers.0.self_attn.qkv_proj")
    assert qkv.type == OpType.LINEAR and qkv.shape == ("T", 960) and qkv.inputs == ("model.layers.0.input_layernorm",)
    assert qkv.weights == ("model.layers.0.self_attn.qkv_proj.weight",)
    k = g.op("model.layers.0.self_attn.k_proj")
    assert k.type == OpType.SLICE and k.inputs == (qkv.name,) and (k.params["start"], k.params["stop"]) == (576, 768)
    gate_up = g.op("model.layers.3.mlp.gate_up_proj")
    assert gate_up.shape == ("T", 3072) and gate_up.params["fused"] == ["model.layers.3.mlp.gate_proj",
                                                                       "model.layers.3.mlp.up_proj"]
    assert g.op("model.layers.3.mlp.up_proj").params == {"start": 1536, "stop": 3072}
    assert g.op("model.layers.29.mlp.down_proj").inputs == ("model.layers.29.mlp.act_fn",)
    scores = g.op("model.layers.7.self_attn.scores")
    assert scores.params["causal"] and scores.params["cache"] and scores.params["kv_heads"] == 3
    assert g.op("lm_head").weights == ("model.embed_tokens.weight",)  # tied embeddings
    assert {OpType.RMSNORM, OpType.ROPE, OpType.SILU_MUL, OpType.LM_HEAD, OpType.SAMPLE,
            OpType.SLICE} <= {op.type for op in g.ops}


def test_fused_weights_stack_the_parts() -> None:
    g = Graph("m", "llama", tuple(fused_linear("f", "x", [("a", 2), ("b", 3)], has_bias=True)), ("x",), ("b",))
    state = {"a.weight": torch.ones(2, 4), "b.weight": torch.zeros(3, 4), "a.bias": torch.tensor([1.0, 2.0]),
             "b.bias": torch.tensor([3.0, 4.0, 5.0])}
    stacked = fused_weights(g, state)
    assert stacked["f.weight"].shape == (5, 4) and stacked["f.weight"][:2].eq(1).all()
    assert stacked["f.bias"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [op.params for op in g.ops[1:]] == [{"start": 0, "stop": 2}, {"start": 2, "stop": 5}]


def test_eligibility_table() -> None:
    assert ZoneKind.HE in ELIGIBLE_KINDS[OpType.LINEAR]
    assert ZoneKind.HE not in ELIGIBLE_KINDS[OpType.SOFTMAX]
    assert set(ELIGIBLE_KINDS) == set(OpType)


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


def test_unknown_model() -> None:
    with pytest.raises(ModelNotFound, match="unknown model 'gpt-9'"):
        resolve("gpt-9")
