"""How a (tokens x features) matrix is laid out in CKKS slots.

Feature-major blocks: a ciphertext holds `width` features (a power of two) of
`tokens_per_ct` tokens, slot = feature * tokens_per_ct + token, so rotating by
`tokens_per_ct * k` shifts every token's features by k at once. A tensor of n
tokens and d features is a grid of ceil(n / tokens_per_ct) token blocks by
ceil(d / width) feature chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Packing:
    """Slot layout: `width` features x `tokens_per_ct` tokens per ciphertext."""

    slots: int
    width: int

    def __post_init__(self) -> None:
        if self.width < 1 or self.width & (self.width - 1) or self.slots % self.width:
            raise ValueError(f"packing width {self.width} must be a power of two dividing {self.slots} slots")

    @property
    def tokens_per_ct(self) -> int:
        """Tokens held by one ciphertext."""
        return self.slots // self.width

    def grid(self, tokens: int, features: int) -> tuple[int, int]:
        """(token blocks, feature chunks) of a tokens x features tensor."""
        return -(-tokens // self.tokens_per_ct), -(-features // self.width)

    def pack(self, x: np.ndarray) -> list[list[np.ndarray]]:
        """Slot vectors [block][chunk] of a (tokens, features) matrix, zero padded."""
        n, d = x.shape
        nb, nc = self.grid(n, d)
        b = self.tokens_per_ct
        padded = np.zeros((nb * b, nc * self.width))
        padded[:n, :d] = x
        out = []
        for i in range(nb):
            rows = padded[i * b:(i + 1) * b]
            out.append([rows[:, c * self.width:(c + 1) * self.width].T.reshape(-1) for c in range(nc)])
        return out

    def unpack(self, vectors: list[list[np.ndarray]], tokens: int, features: int) -> np.ndarray:
        """The (tokens, features) matrix held by slot vectors [block][chunk]."""
        b = self.tokens_per_ct
        blocks = []
        for row in vectors:
            chunks = [np.asarray(v[: self.slots]).reshape(self.width, b).T for v in row]
            blocks.append(np.concatenate(chunks, axis=1))
        return np.concatenate(blocks, axis=0)[:tokens, :features]

    def meta(self) -> dict[str, str]:
        """The packing as header metadata."""
        return {"packing": "feature-major", "slots": str(self.slots), "width": str(self.width)}

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> Packing:
        """The packing a header describes; ValueError naming what is missing or wrong."""
        if meta.get("packing") != "feature-major":
            raise ValueError(f"unknown packing {meta.get('packing')!r}; expected 'feature-major'")
        try:
            return cls(int(meta["slots"]), int(meta["width"]))
        except (KeyError, ValueError) as e:
            raise ValueError(f"bad packing metadata {meta}: {e}") from None
