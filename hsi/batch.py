"""A batch of token sequences run as one pass: each padded to the longest, its rows sequence after sequence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Batch:
    """Sequences of `lengths` tokens, padded to the longest: row b * width + t is token t of sequence b. Rows past
    a sequence's length are padding: no real token attends to them and pooling leaves them out."""

    lengths: tuple[int, ...]

    @staticmethod
    def of(lengths: Sequence[int]) -> Batch | None:
        """The batch of these sequence lengths; None for one sequence (a pass over a single sequence)."""
        if len(lengths) <= 1:
            return None
        if min(lengths) < 1:
            raise ValueError(f"a batched sequence has no tokens (lengths {list(lengths)})")
        return Batch(tuple(int(n) for n in lengths))

    @property
    def count(self) -> int:
        """How many sequences."""
        return len(self.lengths)

    @property
    def width(self) -> int:
        """The longest sequence: every sequence's rows are padded to it."""
        return max(self.lengths)

    @property
    def rows(self) -> int:
        """Rows of a batched tensor: count x width."""
        return self.count * self.width

    def positions(self, offset: int = 0) -> torch.Tensor:
        """Each row's position within its own sequence (rows,)."""
        return torch.arange(offset, offset + self.width).repeat(self.count)

    def padding(self) -> torch.Tensor:
        """True where a key is padding (count, 1, 1, width): attention scores broadcast against it."""
        return (torch.arange(self.width)[None, :] >= torch.tensor(self.lengths)[:, None])[:, None, None, :]

    def pool_weights(self) -> torch.Tensor:
        """(count, rows): 1/length on each real row of a sequence, so weights @ rows is each sequence's mean."""
        w = torch.zeros(self.count, self.count, self.width)
        for b, n in enumerate(self.lengths):
            w[b, b, :n] = 1.0 / n
        return w.reshape(self.count, self.rows)

    @staticmethod
    def check_attention(params: dict[str, Any]) -> None:
        """ValueError unless an attention op can run batched: bidirectional, no KV cache, as many KV as Q heads."""
        if params["causal"] or params["cache"] or params["kv_heads"] != params["heads"]:
            raise ValueError("batched passes are for bidirectional encoders (no causal mask, KV cache or grouped "
                             "heads)")

    def split_heads(self, x: Any, heads: int, head_dim: int) -> Any:
        """Rows (rows, heads * head_dim) as (count, heads, width, head_dim); torch tensors and CrypTen shares."""
        return x.reshape(self.count, self.width, heads, head_dim).permute(0, 2, 1, 3)

    def merge_heads(self, x: Any) -> Any:
        """(count, heads, width, head_dim) back to rows (rows, heads * head_dim)."""
        count, heads, width, head_dim = tuple(x.size())
        return x.permute(0, 2, 1, 3).reshape(count * width, heads * head_dim)


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, Batch | None]:
    """Token ids of several sequences as one batched input (rows,), and their batch (None for one sequence)."""
    if not sequences:
        raise ValueError("no sequences to batch")
    batch = Batch.of([len(s) for s in sequences])
    if batch is None:
        return torch.tensor(list(sequences[0]), dtype=torch.int64), None
    ids = torch.full((batch.count, batch.width), pad_id, dtype=torch.int64)
    for b, s in enumerate(sequences):
        ids[b, : len(s)] = torch.tensor(list(s), dtype=torch.int64)
    return ids.reshape(-1), batch
