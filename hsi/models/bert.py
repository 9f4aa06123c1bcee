"""BERT adapter: a Hugging Face BertModel (plus sentence-transformers mean pooling) as IR ops."""

from __future__ import annotations

from typing import Any

from hsi.ir import Graph, Op, OpType, fused_linear, linear


def bert_graph(model_name: str, config: Any) -> Graph:
    """The op list of a BERT encoder with mean pooling and L2 normalisation."""
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    inter = int(config.intermediate_size)
    eps = float(config.layer_norm_eps)
    head_dim = hidden // heads
    ops: list[Op] = [
        Op(
            "embeddings",
            OpType.EMBED,
            ("input_ids",),
            ("T", hidden),
            (
                "embeddings.word_embeddings.weight",
                "embeddings.position_embeddings.weight",
                "embeddings.token_type_embeddings.weight",
            ),
            {"style": "bert"},
        ),
        Op(
            "embeddings.LayerNorm",
            OpType.LAYERNORM,
            ("embeddings",),
            ("T", hidden),
            ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"),
            {"eps": eps},
        ),
    ]
    x = "embeddings.LayerNorm"
    for i in range(int(config.num_hidden_layers)):
        p = f"encoder.layer.{i}"
        att = f"{p}.attention.self"

        ops += [
            *fused_linear(f"{att}.qkv", x, [(f"{att}.query", hidden), (f"{att}.key", hidden),
                                             (f"{att}.value", hidden)], has_bias=True),
            Op(
                f"{att}.scores",
                OpType.ATTN_SCORES,
                (f"{att}.query", f"{att}.key"),
                (heads, "T", "S"),
                params={"heads": heads, "kv_heads": heads, "head_dim": head_dim, "causal": False, "cache": False},
            ),
            Op(f"{att}.softmax", OpType.SOFTMAX, (f"{att}.scores",), (heads, "T", "S")),
            Op(
                f"{att}.context",
                OpType.ATTN_CONTEXT,
                (f"{att}.softmax", f"{att}.value"),
                ("T", hidden),
                params={"heads": heads, "kv_heads": heads, "head_dim": head_dim, "cache": False},
            ),
            linear(f"{p}.attention.output.dense", f"{att}.context", hidden, has_bias=True),
            Op(f"{p}.attention.output.residual", OpType.ADD, (f"{p}.attention.output.dense", x), ("T", hidden)),
            Op(
                f"{p}.attention.output.LayerNorm",
                OpType.LAYERNORM,
                (f"{p}.attention.output.residual",),
                ("T", hidden),
                (f"{p}.attention.output.LayerNorm.weight", f"{p}.attention.output.LayerNorm.bias"),
                {"eps": eps},
            ),
            linear(f"{p}.intermediate.dense", f"{p}.attention.output.LayerNorm", inter, has_bias=True),
            Op(f"{p}.intermediate.intermediate_act_fn", OpType.GELU, (f"{p}.intermediate.dense",), ("T", inter)),
            linear(f"{p}.output.dense", f"{p}.intermediate.intermediate_act_fn", hidden, has_bias=True),
            Op(
                f"{p}.output.residual",
                OpType.ADD,
                (f"{p}.output.dense", f"{p}.attention.output.LayerNorm"),
                ("T", hidden),
            ),
            Op(
                f"{p}.output.LayerNorm",
                OpType.LAYERNORM,
                (f"{p}.output.residual",),
                ("T", hidden),
                (f"{p}.output.LayerNorm.weight", f"{p}.output.LayerNorm.bias"),
                {"eps": eps},
            ),
        ]
        x = f"{p}.output.LayerNorm"
    ops.append(Op("pool", OpType.POOL, (x,), (hidden,), params={"mode": "mean", "normalize": True}))
    return Graph(
        model=model_name,
        arch="bert",
        ops=tuple(ops),
        inputs=("input_ids",),
        outputs=("pool",),
        config={"hidden": hidden, "heads": heads, "layers": int(config.num_hidden_layers), "intermediate": inter},
    )
