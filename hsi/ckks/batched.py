"""The token-batched slot layout `Packing`: many tokens per ciphertext, feature-major.

Feature-major blocks of `width` features by `stride = slots / width` slot columns, slot = feature * stride +
column, so rotating by `stride * k` shifts every token's features by k at once; a ciphertext holds
`2 * stride` tokens. A width x width weight block costs `width` plaintext multiplies for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hsi.ckks.slots import Complex, Real, Scalar, TokenPairs, check_width, complex_rows, real_rows

FEATURE_MAJOR = "feature-major-complex"


@dataclass(frozen=True)
class Packing(TokenPairs):
    """Token-batched slot layout: `width` features x `tokens_per_ct` tokens per ciphertext."""

    slots: int
    width: int

    def __post_init__(self) -> None:
        check_width(self.slots, self.width)

    @property
    def stride(self) -> int:
        """Slot columns per feature: the slot rotation that shifts features by one."""
        return self.slots // self.width

    @property
    def tokens_per_ct(self) -> int:
        """Tokens held by one ciphertext (two per slot column: real and imaginary part)."""
        return 2 * self.stride

    # --- what a linear layer needs of a layout (see zones/he/linear.py)
    @property
    def rotation_unit(self) -> int:
        """The slot rotation that moves a diagonal by one."""
        return self.stride

    @property
    def diagonals(self) -> int:
        """Plaintext diagonals (and multiplies) per width x width weight block."""
        return self.width

    @property
    def lane_sums(self) -> list[int]:
        """Rotations that add the lanes of a linear layer's result (none: there is one lane)."""
        return []

    @property
    def output(self) -> Packing:
        """The layout of a linear layer's output."""
        return self

    @property
    def linear_input(self) -> bool:
        """Whether a linear layer takes its input in this layout."""
        return True

    def diagonal(self, block: NDArray[Scalar], k: int) -> NDArray[Scalar]:
        """Diagonal k of a width x width block, compact: one value per feature (see `expand`)."""
        j = np.arange(self.width)
        compact: NDArray[Scalar] = block[j, (j + k) % self.width]
        return compact

    def expand(self, compact: NDArray[Scalar]) -> NDArray[Scalar]:
        """Slot vector of a compact diagonal, or of one token's features broadcast to every token."""
        return np.repeat(compact, self.stride)

    # --- tensors
    def grid(self, tokens: int, features: int) -> tuple[int, int]:
        """(token blocks, feature chunks) of a tokens x features tensor."""
        return -(-tokens // self.tokens_per_ct), -(-features // self.width)

    def pack(self, x: Real) -> list[list[Complex]]:
        """Complex slot vectors [block][chunk] of a real (tokens, features) matrix, zero padded."""
        w = self.width
        return [[np.ascontiguousarray(rows[:, c * w:(c + 1) * w].T.reshape(-1)) for c in range(rows.shape[1] // w)]
                for rows in complex_rows(x, self.tokens_per_ct, w)]

    def unpack(self, vectors: list[list[Complex]], tokens: int, features: int) -> Real:
        """The real (tokens, features) matrix held by complex slot vectors [block][chunk]."""
        blocks = [real_rows(np.concatenate([np.asarray(v[: self.slots]).reshape(self.width, self.stride).T
                                            for v in row], axis=1)) for row in vectors]
        return np.concatenate(blocks, axis=0)[:tokens, :features]

    def meta(self) -> dict[str, str]:
        """The packing as header metadata."""
        return {"packing": FEATURE_MAJOR, "slots": str(self.slots), "width": str(self.width)}
