"""The attacker's own batched forward passes through the first K blocks of a packaged model (BERT or Llama)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from hsi.models.executor import rope_tables

Tensor = torch.Tensor


def _w(state: dict[str, Any], name: str) -> Tensor:
    return state[name].detach().to(torch.float32)


class EncoderForward:
    """BERT (the IR's `bert` graph): embeddings, then `depth` encoder layers, batched over sequences. Depth 0 is
    the embeddings' LayerNorm output; depth K the output of `encoder.layer.{K-1}`."""

    def __init__(self, hf: Any, graph_config: dict[str, Any], eps: float) -> None:
        self.state = {k: v.detach().float() for k, v in hf.state_dict().items()}
        self.layers = int(graph_config["layers"])
        self.heads = int(graph_config["heads"])
        self.hidden = int(graph_config["hidden"])
        self.eps = eps
        self.word = _w(self.state, "embeddings.word_embeddings.weight")

    def embed(self, ids: Tensor) -> Tensor:
        """Depth 0 for ids (B, T): word + position + token type 0, then LayerNorm."""
        s = self.state
        pos = s["embeddings.position_embeddings.weight"][: ids.shape[1]]
        x = self.word[ids] + pos + s["embeddings.token_type_embeddings.weight"][0]
        return F.layer_norm(x, (self.hidden,), s["embeddings.LayerNorm.weight"], s["embeddings.LayerNorm.bias"],
                            self.eps)

    def layer(self, i: int, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """Encoder layer i on x (B, T, d); key_mask (B, T) is False at padding."""
        s, p = self.state, f"encoder.layer.{i}"
        b, t, d = x.shape
        hd = d // self.heads

        def proj(name: str, h: Tensor) -> Tensor:
            return F.linear(h, s[f"{p}.{name}.weight"], s[f"{p}.{name}.bias"])

        def heads(h: Tensor) -> Tensor:
            return h.view(b, t, self.heads, hd).transpose(1, 2)

        q, k, v = (heads(proj(f"attention.self.{n}", x)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        a = F.layer_norm(proj("attention.output.dense", ctx) + x, (d,), s[f"{p}.attention.output.LayerNorm.weight"],
                         s[f"{p}.attention.output.LayerNorm.bias"], self.eps)
        h = proj("output.dense", F.gelu(proj("intermediate.dense", a)))
        return F.layer_norm(h + a, (d,), s[f"{p}.output.LayerNorm.weight"], s[f"{p}.output.LayerNorm.bias"], self.eps)

    @torch.no_grad()
    def hidden_at(self, ids: Tensor, depth: int, key_mask: Tensor | None = None) -> Tensor:
        """The hidden state after `depth` layers, (B, T, d)."""
        x = self.embed(ids)
        for i in range(depth):
            x = self.layer(i, x, key_mask)
        return x

    @torch.no_grad()
    def finish(self, x: Tensor, depth: int, key_mask: Tensor | None = None) -> Tensor:
        """From the hidden state after `depth` layers to the normalised mean-pooled embedding (B, d)."""
        for i in range(depth, self.layers):
            x = self.layer(i, x, key_mask)
        if key_mask is None:
            pooled = x.mean(1)
        else:
            m = key_mask[..., None].float()
            pooled = (x * m).sum(1) / m.sum(1)
        return F.normalize(pooled, dim=-1)


@dataclass
class KVCache:
    """Keys and values by decoder layer, each (B, kv_heads, S, head_dim); B is 1 for a shared prefix."""

    keys: dict[int, Tensor] = field(default_factory=dict)
    values: dict[int, Tensor] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """Positions held."""
        return int(next(iter(self.keys.values())).shape[2]) if self.keys else 0

    def extend(self, new: KVCache, row: int = 0) -> KVCache:
        """This cache with one batch row of `new` appended, in every layer `new` holds."""
        out = KVCache(dict(self.keys), dict(self.values))
        for i in new.keys:
            k, v = new.keys[i][row:row + 1], new.values[i][row:row + 1]
            out.keys[i] = torch.cat([self.keys[i], k], dim=2) if i in self.keys else k
            out.values[i] = torch.cat([self.values[i], v], dim=2) if i in self.values else v
        return out


class DecoderForward:
    """Llama (the IR's `llama` graph): causal, batched, with a KV cache. Depth 0 is `model.embed_tokens`; depth K
    the output of `model.layers.{K-1}` (before the final norm)."""

    def __init__(self, hf: Any, graph_config: dict[str, Any], eps: float, theta: float) -> None:
        self.state = {k: v.detach().float() for k, v in hf.state_dict().items()}
        self.layers = int(graph_config["layers"])
        self.heads, self.kv_heads = int(graph_config["heads"]), int(graph_config["kv_heads"])
        self.head_dim = int(graph_config["head_dim"])
        self.eps, self.theta = eps, theta
        self.word = _w(self.state, "model.embed_tokens.weight")
        self.head = self.state.get("lm_head.weight", self.word)
        self._unhead: Tensor | None = None

    def _norm(self, x: Tensor, name: str) -> Tensor:
        return self.state[name] * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def _rope(self, x: Tensor, start: int) -> Tensor:
        cos, sin = rope_tables(self.head_dim, self.theta, torch.arange(start, start + x.shape[2]))
        half = self.head_dim // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

    def layer(self, i: int, x: Tensor, cache: KVCache | None) -> tuple[Tensor, Tensor, Tensor]:
        """Layer i on x (B, T, d) after the cached prefix (shared when its batch is 1); returns the output and
        this call's keys and values (B, kv_heads, T, head_dim)."""
        s, p = self.state, f"model.layers.{i}"
        b, t, _ = x.shape
        start = int(cache.keys[i].shape[2]) if cache is not None and i in cache.keys else 0  # layers may differ
        h = self._norm(x, f"{p}.input_layernorm.weight")

        def split(name: str, n: int) -> Tensor:
            return F.linear(h, s[f"{p}.self_attn.{name}.weight"]).view(b, t, n, self.head_dim).transpose(1, 2)

        q = self._rope(split("q_proj", self.heads), start)
        k, v = self._rope(split("k_proj", self.kv_heads), start), split("v_proj", self.kv_heads)
        kk, vv = k, v
        if cache is not None and i in cache.keys:
            kk = torch.cat([cache.keys[i].expand(b, -1, -1, -1), k], dim=2)
            vv = torch.cat([cache.values[i].expand(b, -1, -1, -1), v], dim=2)
        rep = self.heads // self.kv_heads
        kk, vv = kk.repeat_interleave(rep, dim=1), vv.repeat_interleave(rep, dim=1)
        scores = q @ kk.transpose(-1, -2) / math.sqrt(self.head_dim)
        total = kk.shape[2]
        mask = torch.arange(total)[None, :] > torch.arange(total - t, total)[:, None]
        scores = scores.masked_fill(mask, torch.finfo(scores.dtype).min)
        ctx = (scores.softmax(-1) @ vv).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        x = x + F.linear(ctx, s[f"{p}.self_attn.o_proj.weight"])
        h = self._norm(x, f"{p}.post_attention_layernorm.weight")
        gate, up = F.linear(h, s[f"{p}.mlp.gate_proj.weight"]), F.linear(h, s[f"{p}.mlp.up_proj.weight"])
        return x + F.linear(F.silu(gate) * up, s[f"{p}.mlp.down_proj.weight"]), k, v

    def embed(self, ids: Tensor) -> Tensor:
        """Depth 0 for ids (B, T)."""
        return self.word[ids]

    @torch.no_grad()
    def blocks(self, x: Tensor, lo: int, hi: int, cache: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """x (B, T, d), the hidden state after `lo` layers of the positions after the cached prefix, through
        layers lo..hi-1: the state after `hi` layers and this call's keys and values of those layers. Right
        padding is harmless: no position attends to a later one."""
        new = KVCache()
        for i in range(lo, hi):
            x, new.keys[i], new.values[i] = self.layer(i, x, cache)
        return x, new

    @torch.no_grad()
    def hidden_at(self, ids: Tensor, depth: int, cache: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """ids (B, T) after the cached prefix, through `depth` layers."""
        return self.blocks(self.embed(ids), 0, depth, cache)

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """The LM head on a final hidden state (..., d): final norm, then the (tied) output projection."""
        return F.linear(self._norm(x, "model.norm.weight"), self.head)

    @torch.no_grad()
    def unhead(self, logits: Tensor) -> Tensor:
        """The attacker's first step against logits (..., V): the normalised final state (..., d) they came from,
        by least squares through the (public to it) output projection."""
        if self._unhead is None:
            self._unhead = torch.linalg.pinv(self.head)  # (d, V)
        return logits @ self._unhead.T
