"""Llama adapter: a Hugging Face LlamaForCausalLM as IR ops, with a KV cache in the attention ops."""

from __future__ import annotations

from typing import Any

from hsi.ir import Graph, Op, OpType, fused_linear, linear


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:  # transformers 5 keeps it in rope_parameters
        params = getattr(config, "rope_parameters", None) or {}
        theta = params.get("rope_theta", 10000.0)
    return float(theta)


def llama_graph(model_name: str, config: Any, tied_embeddings: bool) -> Graph:
    """The op list of a Llama decoder ending in greedy sampling of the last position."""
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", heads) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    inter = int(config.intermediate_size)
    eps = float(config.rms_norm_eps)
    theta = _rope_theta(config)
    bias = bool(getattr(config, "attention_bias", False))
    mlp_bias = bool(getattr(config, "mlp_bias", False))
    vocab = int(config.vocab_size)

    ops: list[Op] = [
        Op("model.embed_tokens", OpType.EMBED, ("input_ids",), ("T", hidden), ("model.embed_tokens.weight",),
           {"style": "lookup"}),
    ]
    x = "model.embed_tokens"
    for i in range(int(config.num_hidden_layers)):
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        attn = {"heads": heads, "kv_heads": kv_heads, "head_dim": head_dim}
        ops += [
            Op(f"{p}.input_layernorm", OpType.RMSNORM, (x,), ("T", hidden), (f"{p}.input_layernorm.weight",),
               {"eps": eps}),
            *fused_linear(f"{a}.qkv_proj", f"{p}.input_layernorm",
                          [(f"{a}.q_proj", heads * head_dim), (f"{a}.k_proj", kv_heads * head_dim),
                           (f"{a}.v_proj", kv_heads * head_dim)], bias),
            Op(f"{a}.rope_q", OpType.ROPE, (f"{a}.q_proj",), ("T", heads * head_dim),
               params={"heads": heads, "head_dim": head_dim, "theta": theta}),
            Op(f"{a}.rope_k", OpType.ROPE, (f"{a}.k_proj",), ("T", kv_heads * head_dim),
               params={"heads": kv_heads, "head_dim": head_dim, "theta": theta}),
            Op(f"{a}.scores", OpType.ATTN_SCORES, (f"{a}.rope_q", f"{a}.rope_k"), (heads, "T", "S"),
               params={**attn, "causal": True, "cache": True}),
            Op(f"{a}.softmax", OpType.SOFTMAX, (f"{a}.scores",), (heads, "T", "S")),
            Op(f"{a}.context", OpType.ATTN_CONTEXT, (f"{a}.softmax", f"{a}.v_proj"), ("T", heads * head_dim),
               params={**attn, "cache": True}),
            linear(f"{a}.o_proj", f"{a}.context", hidden, bias),
            Op(f"{a}.residual", OpType.ADD, (f"{a}.o_proj", x), ("T", hidden)),
            Op(f"{p}.post_attention_layernorm", OpType.RMSNORM, (f"{a}.residual",), ("T", hidden),
               (f"{p}.post_attention_layernorm.weight",), {"eps": eps}),
            *fused_linear(f"{p}.mlp.gate_up_proj", f"{p}.post_attention_layernorm",
                          [(f"{p}.mlp.gate_proj", inter), (f"{p}.mlp.up_proj", inter)], mlp_bias),
            Op(f"{p}.mlp.act_fn", OpType.SILU_MUL, (f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"), ("T", inter)),
            linear(f"{p}.mlp.down_proj", f"{p}.mlp.act_fn", hidden, mlp_bias),
            Op(f"{p}.mlp.residual", OpType.ADD, (f"{p}.mlp.down_proj", f"{a}.residual"), ("T", hidden)),
        ]
        x = f"{p}.mlp.residual"
    head_weight = "model.embed_tokens.weight" if tied_embeddings else "lm_head.weight"
    ops += [
        Op("model.norm", OpType.RMSNORM, (x,), ("T", hidden), ("model.norm.weight",), {"eps": eps}),
        # Greedy decoding needs only the last position's logits.
        Op("lm_head", OpType.LM_HEAD, ("model.norm",), (1, vocab), (head_weight,), {"last_only": True}),
        Op("sample", OpType.SAMPLE, ("lm_head",), (1,), params={"strategy": "greedy"}),
    ]
    return Graph(
        model=model_name,
        arch="llama",
        ops=tuple(ops),
        inputs=("input_ids",),
        outputs=("sample",),
        config={"hidden": hidden, "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim,
                "layers": int(config.num_hidden_layers), "intermediate": inter, "vocab": vocab},
    )
