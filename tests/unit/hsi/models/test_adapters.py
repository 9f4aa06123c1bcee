"""The BERT and Llama adapters produce op lists named after the HF modules; unknown models are named."""

from __future__ import annotations

import pytest

from hsi.ir import OpType
from hsi.models.registry import ModelNotFound, load_graph, resolve


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


def test_unknown_model() -> None:
    with pytest.raises(ModelNotFound, match="unknown model 'gpt-9'"):
        resolve("gpt-9")
