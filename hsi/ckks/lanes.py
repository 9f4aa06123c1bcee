"""The lane slot layouts, for a few tokens (each generated one): `LanePacking` and `ComplexLanePacking`.

- `LanePacking`: one token pair per ciphertext, its `width` features repeated in `lanes = slots / width` lanes
  of contiguous slots, slot = lane * width + feature. Staggered (a linear layer's input), lane l holds the
  features rotated by l * width / lanes, so each lane works through a different `width / lanes` of the weight
  diagonals and a width x width block costs `width / lanes` multiplies; replicated (a linear layer's output),
  every lane holds the same features after the lanes are summed.
- `ComplexLanePacking`, for one token: the lane layout with the token's features split into halves carried in
  the real and the imaginary part, so a chunk of `width` features takes `width / 2` slots per lane and twice as
  many lanes. A linear layer is y = M z + conj(N' z) for complex matrices M, N' (see `diagonal_terms`): two
  multiplies per diagonal, half as many diagonals per lane and one conjugation per output chunk, half the
  multiplies of the lane layout. Its output is left with the lanes unsummed (partial): whoever decrypts adds
  them up, so no lane-sum rotations are spent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, cast

import numpy as np
from numpy.typing import NDArray

from hsi.ckks.slots import Complex, Real, Scalar, TokenPairs, check_width, complex_rows, real_rows

LANE_STAGGERED = "lanes-staggered"
LANE_REPLICATED = "lanes-replicated"
COMPLEX_STAGGERED = "complex-lanes-staggered"
COMPLEX_PARTIAL = "complex-lanes-partial"


@dataclass(frozen=True)
class _LaneShape(ABC):
    """The fields and checks every lane layout shares: `width` features per chunk in lanes of contiguous slots,
    staggered (a linear layer's input) or not (its output)."""

    slots: int
    width: int
    staggered: bool = True
    NEEDS: ClassVar[str]  # the width condition, for the error below

    def __post_init__(self) -> None:
        check_width(self.slots, self.width)
        if not self.wide_enough(self.slots, self.width):
            raise ValueError(f"{type(self).__name__} needs {self.NEEDS} >= slots ({self.slots}); width "
                             f"{self.width} is too narrow")

    @staticmethod
    @abstractmethod
    def wide_enough(slots: int, width: int) -> bool:
        """Whether `width` features leave each lane at least one diagonal."""


@dataclass(frozen=True)
class LanePacking(_LaneShape, TokenPairs):
    """One token pair per ciphertext, its features in `lanes` lanes, staggered (a linear layer's input) or
    replicated (its output)."""

    NEEDS = "width^2"

    @staticmethod
    def wide_enough(slots: int, width: int) -> bool:
        """Whether `width` features leave each of the slots/width lanes at least one diagonal."""
        return width * width >= slots

    @property
    def lanes(self) -> int:
        """Copies of the features in one ciphertext."""
        return self.slots // self.width

    @property
    def tokens_per_ct(self) -> int:
        """Tokens held by one ciphertext: one in the real, one in the imaginary part."""
        return 2

    @property
    def rotation_unit(self) -> int:
        """The slot rotation that moves a diagonal by one."""
        return 1

    @property
    def diagonals(self) -> int:
        """Plaintext multiplies per width x width weight block: the diagonals each lane works through."""
        return self.width // self.lanes

    @property
    def lane_sums(self) -> list[int]:
        """Rotations that add up the lanes of a linear layer's result (every lane then holds the sum)."""
        return [self.width << j for j in range(self.lanes.bit_length() - 1)]

    @property
    def output(self) -> LanePacking:
        """The layout of a linear layer's output: the lanes summed, so replicated."""
        return LanePacking(self.slots, self.width, staggered=False)

    @property
    def linear_input(self) -> bool:
        """Whether a linear layer takes its input in this layout (staggered only)."""
        return self.staggered

    def feature_at(self, k: int) -> NDArray[np.intp]:
        """For each slot s, the input feature that slot s + k holds in the staggered layout."""
        s = (np.arange(self.slots) + k) % self.slots
        return (s % self.width + self.diagonals * (s // self.width)) % self.width

    def diagonal(self, block: NDArray[Scalar], k: int) -> NDArray[Scalar]:
        """Slot vector multiplying the input rotated by k: slot s = (lane, feature f) gets W[f, feature of s + k]
        (over the lanes, the k < width / lanes of every f cover each input feature once)."""
        slots: NDArray[Scalar] = block[np.arange(self.slots) % self.width, self.feature_at(k)]
        return slots

    def expand(self, compact: NDArray[Scalar]) -> NDArray[Scalar]:
        """Slot vector of a diagonal (already one), or of one token's features replicated to every lane."""
        return compact if compact.size == self.slots else np.tile(compact, self.lanes)

    def grid(self, tokens: int, features: int) -> tuple[int, int]:
        """(token pairs, feature chunks) of a tokens x features tensor."""
        return -(-tokens // 2), -(-features // self.width)

    def pack(self, x: Real) -> list[list[Complex]]:
        """Complex slot vectors [token pair][chunk] of a real (tokens, features) matrix, zero padded."""
        w, step = self.width, self.diagonals
        out: list[list[Complex]] = []
        for rows in complex_rows(x, 2, w):
            chunks = [rows[0, c * w:(c + 1) * w] for c in range(rows.shape[1] // w)]
            if self.staggered:
                out.append([np.concatenate([np.roll(v, -step * lane) for lane in range(self.lanes)]) for v in chunks])
            else:
                out.append([np.tile(v, self.lanes) for v in chunks])
        return out

    def unpack(self, vectors: list[list[Complex]], tokens: int, features: int) -> Real:
        """The real (tokens, features) matrix held by complex slot vectors [token pair][chunk] (lane 0 holds the
        features unrotated in both forms)."""
        blocks = [real_rows(np.concatenate([np.asarray(v[: self.width]) for v in row])[None, :]) for row in vectors]
        return np.concatenate(blocks, axis=0)[:tokens, :features]

    def meta(self) -> dict[str, str]:
        """The packing as header metadata."""
        return {"packing": LANE_STAGGERED if self.staggered else LANE_REPLICATED, "slots": str(self.slots),
                "width": str(self.width)}


@dataclass(frozen=True)
class ComplexLanePacking(_LaneShape):
    """One token per ciphertext, each chunk of `width` features as `width / 2` complex values (first half
    real, second half imaginary) in lanes of `width / 2` slots: staggered (a linear layer's input) or partial
    (its output, each lane holding its share of the sums)."""

    NEEDS = "(width/2)^2"

    @staticmethod
    def wide_enough(slots: int, width: int) -> bool:
        """Whether `width` features (`width / 2` complex) leave each lane at least one diagonal."""
        return width >= 2 and LanePacking.wide_enough(slots, width // 2)

    @property
    def _lanes(self) -> LanePacking:
        """The complex values' lane geometry: a lane layout `width / 2` slots wide."""
        return LanePacking(self.slots, self.width // 2)

    @property
    def lanes(self) -> int:
        """Copies of the features in one ciphertext."""
        return self._lanes.lanes

    @property
    def tokens_per_ct(self) -> int:
        """Tokens held by one ciphertext."""
        return 1

    @property
    def rotation_unit(self) -> int:
        """The slot rotation that moves a diagonal by one."""
        return 1

    @property
    def diagonals(self) -> int:
        """Rotations of the input per weight block: the diagonals each lane works through."""
        return self._lanes.diagonals

    @property
    def lane_sums(self) -> list[int]:
        """Rotations that add up the lanes of a linear layer's result: none, the output stays partial."""
        return []

    @property
    def output(self) -> ComplexLanePacking:
        """The layout of a linear layer's output: the lanes unsummed."""
        return ComplexLanePacking(self.slots, self.width, staggered=False)

    @property
    def linear_input(self) -> bool:
        """Whether a linear layer takes its input in this layout (staggered only)."""
        return self.staggered

    @property
    def terms(self) -> int:
        """Plaintext diagonals per rotation of the input: M's and N''s."""
        return 2

    def diagonal_terms(self, block: Real, k: int) -> list[Complex]:
        """[M_k, N'_k] for a width x width real block, y = sum_k M_k rot(z, k) + conj(sum_k N'_k rot(z, k)).

        With the block's quarters W11 (first output half from first input half), W12, W21, W22 and
        z = x1 + i x2, y = y1 + i y2 = M z + N conj(z) for M = (W11 + W22 + i(W21 - W12)) / 2 and
        N = (W11 - W22 + i(W21 + W12)) / 2, and N conj(z) = conj(conj(N) z): N' = conj(N)."""
        h = self.width // 2
        w11, w12, w21, w22 = block[:h, :h], block[:h, h:], block[h:, :h], block[h:, h:]
        m = cast(Complex, (w11 + w22 + 1j * (w21 - w12)) / 2)  # numpy's stubs lose the complex dtype here
        n = cast(Complex, (w11 - w22 - 1j * (w21 + w12)) / 2)
        return [self._lanes.diagonal(m, k), self._lanes.diagonal(n, k)]

    def partial_gain(self, weight: Real) -> float:
        """The largest real or imaginary part a slot of a linear layer's partial output (before its bias) takes
        per unit of the largest input magnitude: the real part of lane slot f sums W[f, j] x_j over the lane's
        share of input features j, the imaginary part W[h + f, j] x_j (M z + N conj(z) splits that way term by
        term), so the bound is the largest sum of |W| over one row and one lane's features."""
        h, w = self.width // 2, self.width
        d_out, d_in = weight.shape
        n_out, n_in = -(-d_out // w), -(-d_in // w)
        a = np.zeros((n_out * w, n_in * w))
        a[:d_out, :d_in] = np.abs(weight)
        folded = a.reshape(n_out * w, n_in, 2, h).sum(axis=(1, 2))  # row, complex input index j: every chunk's pair
        index = np.stack([self._lanes.feature_at(k) for k in range(self.diagonals)], axis=-1)  # slot, k -> j
        f = np.arange(self.slots)[:, None] % h
        return max(float(folded[o * w + half + f, index].sum(axis=1).max()) for o in range(n_out) for half in (0, h))

    def expand(self, compact: NDArray[Scalar]) -> NDArray[Scalar]:
        """Slot vector of a diagonal (already one)."""
        return compact

    def bias_slots(self, bias: Real) -> Complex:
        """Slot vector adding one output chunk's bias to a linear layer's (partial) output: in lane 0."""
        return self.output._place(bias)

    def _place(self, chunk: Real) -> Complex:
        """One chunk of features as this layout's slot vector (partial: all of it in lane 0)."""
        h = self.width // 2
        z: Complex = chunk[:h] + 1j * chunk[h:]
        if self.staggered:
            step = self.diagonals
            return np.concatenate([np.roll(z, -step * lane) for lane in range(self.lanes)])
        return np.concatenate([z, np.zeros(self.slots - h, dtype=complex)])

    def grid(self, tokens: int, features: int) -> tuple[int, int]:
        """(tokens, feature chunks) of a tokens x features tensor."""
        return tokens, -(-features // self.width)

    def pack(self, x: Real) -> list[list[Complex]]:
        """Complex slot vectors [token][chunk] of a real (tokens, features) matrix, zero padded."""
        w = self.width
        nc = -(-x.shape[1] // w)
        padded = np.zeros((x.shape[0], nc * w))
        padded[:, :x.shape[1]] = x
        return [[self._place(row[c * w:(c + 1) * w]) for c in range(nc)] for row in padded]

    def unpack(self, vectors: list[list[Complex]], tokens: int, features: int) -> Real:
        """The real (tokens, features) matrix held by complex slot vectors [token][chunk]: lane 0 of the
        staggered form (unrotated), the sum of the lanes of the partial form."""
        h = self.width // 2

        def chunk(v: Complex) -> Real:
            v = np.asarray(v[: self.slots])
            z = v[:h] if self.staggered else v.reshape(self.lanes, h).sum(axis=0)
            return np.concatenate([z.real, z.imag])

        rows = [np.concatenate([chunk(v) for v in row]) for row in vectors]
        return np.stack(rows)[:tokens, :features]

    def meta(self) -> dict[str, str]:
        """The packing as header metadata."""
        return {"packing": COMPLEX_STAGGERED if self.staggered else COMPLEX_PARTIAL, "slots": str(self.slots),
                "width": str(self.width)}
