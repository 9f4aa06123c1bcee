"""How a (tokens x features) matrix is laid out in CKKS slots.

Two layouts, both carrying two tokens per slot (one in the real, one in the imaginary
part: weights are real, so a linear layer maps both independently):

- `Packing`, token-batched: feature-major blocks of `width` features by `stride = slots /
  width` slot columns, slot = feature * stride + column, so rotating by `stride * k`
  shifts every token's features by k at once; a ciphertext holds `2 * stride` tokens.
  A width x width weight block costs `width` plaintext multiplies for all of them.
- `LanePacking`, for a few tokens (each generated token): one token pair per
  ciphertext, its `width` features repeated in `lanes = slots / width` lanes of
  contiguous slots, slot = lane * width + feature. Staggered (a linear layer's input),
  lane l holds the features rotated by l * width / lanes, so each lane works through a
  different `width / lanes` of the weight diagonals and a width x width block costs
  `width / lanes` multiplies; replicated (a linear layer's output), every lane holds the
  same features after the lanes are summed.

A tensor of n tokens and d features is a grid of ceil(n / tokens_per_ct) token blocks
by ceil(d / width) feature chunks in either layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from orchestrator.policy import HeZone

FEATURE_MAJOR = "feature-major-complex"
LANE_STAGGERED = "lanes-staggered"
LANE_REPLICATED = "lanes-replicated"


def _check_width(slots: int, width: int) -> None:
    if width < 1 or width & (width - 1) or slots % width:
        raise ValueError(f"packing width {width} must be a power of two dividing {slots} slots")


def _complex_rows(x: np.ndarray, tokens_per_ct: int, width: int) -> list[np.ndarray]:
    """Per token block, a (tokens_per_ct / 2, chunks * width) complex matrix: the block's first half of tokens
    in the real part, the second half in the imaginary part, zero padded."""
    n, d = x.shape
    half = tokens_per_ct // 2
    nb, nc = -(-n // tokens_per_ct), -(-d // width)
    padded = np.zeros((nb * tokens_per_ct, nc * width))
    padded[:n, :d] = x
    return [padded[i * tokens_per_ct:i * tokens_per_ct + half] + 1j * padded[i * tokens_per_ct + half:(i + 1) *
                                                                              tokens_per_ct] for i in range(nb)]


def _real_rows(cplx: np.ndarray) -> np.ndarray:
    return np.concatenate([cplx.real, cplx.imag], axis=0)


@dataclass(frozen=True)
class Packing:
    """Token-batched slot layout: `width` features x `tokens_per_ct` tokens per ciphertext."""

    slots: int
    width: int

    def __post_init__(self) -> None:
        _check_width(self.slots, self.width)

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

    def diagonal(self, block: np.ndarray, k: int) -> np.ndarray:
        """Diagonal k of a width x width block, compact: one value per feature (see `expand`)."""
        j = np.arange(self.width)
        return block[j, (j + k) % self.width]

    def expand(self, compact: np.ndarray) -> np.ndarray:
        """Slot vector of a compact diagonal, or of one token's features broadcast to every token."""
        return np.repeat(compact, self.stride)

    # --- tensors
    def grid(self, tokens: int, features: int) -> tuple[int, int]:
        """(token blocks, feature chunks) of a tokens x features tensor."""
        return -(-tokens // self.tokens_per_ct), -(-features // self.width)

    def pack(self, x: np.ndarray) -> list[list[np.ndarray]]:
        """Complex slot vectors [block][chunk] of a real (tokens, features) matrix, zero padded."""
        w = self.width
        return [[np.ascontiguousarray(rows[:, c * w:(c + 1) * w].T.reshape(-1)) for c in range(rows.shape[1] // w)]
                for rows in _complex_rows(x, self.tokens_per_ct, w)]

    def unpack(self, vectors: list[list[np.ndarray]], tokens: int, features: int) -> np.ndarray:
        """The real (tokens, features) matrix held by complex slot vectors [block][chunk]."""
        blocks = [_real_rows(np.concatenate([np.asarray(v[: self.slots]).reshape(self.width, self.stride).T
                                             for v in row], axis=1)) for row in vectors]
        return np.concatenate(blocks, axis=0)[:tokens, :features]

    def meta(self) -> dict[str, str]:
        """The packing as header metadata."""
        return {"packing": FEATURE_MAJOR, "slots": str(self.slots), "width": str(self.width)}


@dataclass(frozen=True)
class LanePacking:
    """One token pair per ciphertext, its features in `lanes` lanes, staggered (a linear layer's input) or
    replicated (its output)."""

    slots: int
    width: int
    staggered: bool = True

    def __post_init__(self) -> None:
        _check_width(self.slots, self.width)
        if not self.wide_enough(self.slots, self.width):
            raise ValueError(f"lane packing needs width^2 >= slots ({self.slots}); width {self.width} is too "
                             "narrow")

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

    def _feature_at(self, k: int) -> np.ndarray:
        """For each slot s, the input feature that slot s + k holds in the staggered layout."""
        s = (np.arange(self.slots) + k) % self.slots
        return (s % self.width + self.diagonals * (s // self.width)) % self.width

    def diagonal(self, block: np.ndarray, k: int) -> np.ndarray:
        """Slot vector multiplying the input rotated by k: slot s = (lane, feature f) gets W[f, feature of s + k]
        (over the lanes, the k < width / lanes of every f cover each input feature once)."""
        return block[np.arange(self.slots) % self.width, self._feature_at(k)]

    def expand(self, compact: np.ndarray) -> np.ndarray:
        """Slot vector of a diagonal (already one), or of one token's features replicated to every lane."""
        return compact if compact.size == self.slots else np.tile(compact, self.lanes)

    def grid(self, tokens: int, features: int) -> tuple[int, int]:
        """(token pairs, feature chunks) of a tokens x features tensor."""
        return -(-tokens // 2), -(-features // self.width)

    def pack(self, x: np.ndarray) -> list[list[np.ndarray]]:
        """Complex slot vectors [token pair][chunk] of a real (tokens, features) matrix, zero padded."""
        w, step = self.width, self.diagonals
        out = []
        for rows in _complex_rows(x, 2, w):
            chunks = [rows[0, c * w:(c + 1) * w] for c in range(rows.shape[1] // w)]
            if self.staggered:
                out.append([np.concatenate([np.roll(v, -step * lane) for lane in range(self.lanes)]) for v in chunks])
            else:
                out.append([np.tile(v, self.lanes) for v in chunks])
        return out

    def unpack(self, vectors: list[list[np.ndarray]], tokens: int, features: int) -> np.ndarray:
        """The real (tokens, features) matrix held by complex slot vectors [token pair][chunk] (lane 0 holds the
        features unrotated in both forms)."""
        blocks = [_real_rows(np.concatenate([np.asarray(v[: self.width]) for v in row])[None, :]) for row in vectors]
        return np.concatenate(blocks, axis=0)[:tokens, :features]

    def meta(self) -> dict[str, str]:
        """The packing as header metadata."""
        return {"packing": LANE_STAGGERED if self.staggered else LANE_REPLICATED, "slots": str(self.slots),
                "width": str(self.width)}


AnyPacking = Packing | LanePacking


def packing_from_meta(meta: dict[str, str]) -> AnyPacking:
    """The packing a header describes; ValueError naming what is missing or wrong."""
    kind = meta.get("packing")
    if kind not in (FEATURE_MAJOR, LANE_STAGGERED, LANE_REPLICATED):
        raise ValueError(f"unknown packing {kind!r}; expected one of {FEATURE_MAJOR!r}, {LANE_STAGGERED!r}, "
                         f"{LANE_REPLICATED!r}")
    try:
        slots, width = int(meta["slots"]), int(meta["width"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"bad packing metadata {meta}: {e}") from None
    if kind == FEATURE_MAJOR:
        return Packing(slots, width)
    return LanePacking(slots, width, staggered=kind == LANE_STAGGERED)


def lane_packing(zone: HeZone) -> LanePacking | None:
    """The lane layout of an HE zone (staggered, for linear inputs), or None when its width is too narrow."""
    slots = zone.ckks.ring_dim // 2
    if not LanePacking.wide_enough(slots, zone.pack_width) or zone.lane_max_tokens == 0:
        return None
    return LanePacking(slots, zone.pack_width)


def input_packing(zone: HeZone, tokens: int) -> AnyPacking:
    """The layout a tensor of `tokens` tokens is encrypted in for HE zone `zone`: lanes for at most the
    zone's `lane_max_tokens` tokens, else token-batched."""
    lane = lane_packing(zone)
    if lane is not None and tokens <= zone.lane_max_tokens:
        return lane
    return Packing(zone.ckks.ring_dim // 2, zone.pack_width)


def he_mask_bits(zone: HeZone) -> int:
    """Bits of the mask an HE zone draws for the he->mpc conversion: its `mask_bits`, less ceil(log2(lanes) / 2)
    when it uses the lane layout. A linear layer's output in lanes is replicated, and a replicated slot vector's
    polynomial has sqrt(lanes)-times larger coefficients for the same slot values (measured at N=2^14, scale
    2^35, first modulus 2^60: uniform slots decrypt at +-2^29 and wrap at 2^30; slots replicated over 8 or 16
    lanes decrypt at 2^27 and wrap at 2^28, over 32 lanes at 2^26 and sometimes wrap at 2^27)."""
    lane = lane_packing(zone)
    return zone.mask_bits - (0 if lane is None else -(-(lane.lanes.bit_length() - 1) // 2))
