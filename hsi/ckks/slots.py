"""What every slot layout shares: two tokens per slot (one in the real, one in the imaginary part), real weights.

Weights are real, so a linear layer maps the two tokens of a slot independently: one real diagonal per
rotation of the input acts on both at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar, cast

import numpy as np
from numpy.typing import NDArray

Real = NDArray[np.float64]  # a real matrix or vector: activations, weights, a bias
Complex = NDArray[np.complex128]  # complex slot values
Scalar = TypeVar("Scalar", np.float64, np.complex128)  # a weight block's entries (complex: see lanes.py)


def check_width(slots: int, width: int) -> None:
    """ValueError unless `width` is a power of two dividing `slots`."""
    if width < 1 or width & (width - 1) or slots % width:
        raise ValueError(f"packing width {width} must be a power of two dividing {slots} slots")


def complex_rows(x: Real, tokens_per_ct: int, width: int) -> list[Complex]:
    """Per token block, a (tokens_per_ct / 2, chunks * width) complex matrix: the block's first half of tokens
    in the real part, the second half in the imaginary part, zero padded."""
    n, d = x.shape
    half = tokens_per_ct // 2
    nb, nc = -(-n // tokens_per_ct), -(-d // width)
    padded = np.zeros((nb * tokens_per_ct, nc * width))
    padded[:n, :d] = x
    return [padded[i * tokens_per_ct:i * tokens_per_ct + half] + 1j * padded[i * tokens_per_ct + half:(i + 1) *
                                                                              tokens_per_ct] for i in range(nb)]


def real_rows(cplx: Complex) -> Real:
    """The tokens of complex rows made real again: the real parts' tokens, then the imaginary parts'."""
    return np.concatenate([cplx.real, cplx.imag], axis=0)


class TokenPairs(ABC):
    """What a linear layer needs of a layout with two tokens per slot (real and imaginary part) and real
    weights: one real diagonal per rotation, acting on both tokens at once."""

    @abstractmethod
    def diagonal(self, block: NDArray[Scalar], k: int) -> NDArray[Scalar]:
        """Slot vector (or compact form, see `expand`) multiplying the input rotated by k."""

    @abstractmethod
    def expand(self, compact: NDArray[Scalar]) -> NDArray[Scalar]:
        """Slot vector of a compact diagonal or of one token's features."""

    @property
    def terms(self) -> int:
        """Plaintext diagonals per rotation of the input (the length of `diagonal_terms`)."""
        return 1

    def diagonal_terms(self, block: Real, k: int) -> Sequence[Real | Complex]:
        """The plaintext diagonals multiplying the input rotated by k: one (see `ComplexLanePacking` for two)."""
        return [self.diagonal(block, k)]

    def bias_slots(self, bias: Real) -> Complex:
        """Slot vector adding one output chunk's bias to every token of a linear layer's output."""
        return cast(Complex, self.expand(bias) * (1 + 1j))
