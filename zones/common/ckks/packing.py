"""How a (tokens x features) matrix is laid out in CKKS slots.

Feature-major blocks of complex slots: a ciphertext holds `width` features (a power
of two) of `stride = slots / width` slot columns, slot = feature * stride + column,
so rotating by `stride * k` shifts every token's features by k at once. Each slot
column carries two tokens, one in the real and one in the imaginary part (weights
are real, so a linear layer maps both independently): a ciphertext holds
`tokens_per_ct = 2 * stride` tokens. A tensor of n tokens and d features is a grid of
ceil(n / tokens_per_ct) token blocks by ceil(d / width) feature chunks.
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
    def stride(self) -> int:
        """Slot columns per feature: the slot rotation that shifts features by one."""
        return self.slots // self.width

    @property
    def tokens_per_ct(self) -> int:
        """Tokens held by one ciphertext (two per slot column: real and imaginary part)."""
        return 2 * self.stride

    def grid(self, tokens: int, features: int) -> tuple[int, int]:
        """(token blocks, feature chunks) of a tokens x features tensor."""
        return -(-tokens // self.tokens_per_ct), -(-features // self.width)

    def pack(self, x: np.ndarray) -> list[list[np.ndarray]]:
        """Complex slot vectors [block][chunk] of a real (tokens, features) matrix, zero padded."""
        n, d = x.shape
        nb, nc = self.grid(n, d)
        s = self.stride
        padded = np.zeros((nb * 2 * s, nc * self.width))
        padded[:n, :d] = x
        out = []
        for i in range(nb):
            rows = padded[i * 2 * s:(i + 1) * 2 * s]
            cplx = rows[:s] + 1j * rows[s:]
            out.append([np.ascontiguousarray(cplx[:, c * self.width:(c + 1) * self.width].T.reshape(-1))
                        for c in range(nc)])
        return out

    def unpack(self, vectors: list[list[np.ndarray]], tokens: int, features: int) -> np.ndarray:
        """The real (tokens, features) matrix held by complex slot vectors [block][chunk]."""
        blocks = []
        for row in vectors:
            chunks = [np.asarray(v[: self.slots]).reshape(self.width, self.stride).T for v in row]
            cplx = np.concatenate(chunks, axis=1)
            blocks.append(np.concatenate([cplx.real, cplx.imag], axis=0))
        return np.concatenate(blocks, axis=0)[:tokens, :features]

    def meta(self) -> dict[str, str]:
        """The packing as header metadata."""
        return {"packing": "feature-major-complex", "slots": str(self.slots), "width": str(self.width)}

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> Packing:
        """The packing a header describes; ValueError naming what is missing or wrong."""
        if meta.get("packing") != "feature-major-complex":
            raise ValueError(f"unknown packing {meta.get('packing')!r}; expected 'feature-major-complex'")
        try:
            return cls(int(meta["slots"]), int(meta["width"]))
        except (KeyError, ValueError) as e:
            raise ValueError(f"bad packing metadata {meta}: {e}") from None
