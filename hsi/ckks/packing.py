"""How a (tokens x features) matrix is laid out in CKKS slots: the layouts, and which one a tensor takes.

Three layouts, each in a module of its own and all importable from here:

- `Packing` (batched.py), token-batched: many tokens per ciphertext, feature-major, so one rotation shifts
  every token's features at once.
- `LanePacking` (lanes.py), for a few tokens: one token pair per ciphertext, its features repeated in lanes,
  staggered as a linear layer's input, replicated as its output.
- `ComplexLanePacking` (lanes.py), for one token (each generated token): the lane layout with the token's
  features split into the real and the imaginary part, its output left partial (lanes unsummed).

The first two carry two tokens per slot, one in the real and one in the imaginary part (slots.py). A tensor of
n tokens and d features is a grid of ceil(n / tokens_per_ct) token blocks by ceil(d / width) feature chunks in
any layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hsi.ckks.batched import FEATURE_MAJOR, Packing
from hsi.ckks.lanes import (
    COMPLEX_PARTIAL,
    COMPLEX_STAGGERED,
    LANE_REPLICATED,
    LANE_STAGGERED,
    ComplexLanePacking,
    LanePacking,
)

if TYPE_CHECKING:
    from hsi.policy import HeZone

__all__ = [
    "COMPLEX_PARTIAL",
    "COMPLEX_STAGGERED",
    "FEATURE_MAJOR",
    "LANE_REPLICATED",
    "LANE_STAGGERED",
    "AnyPacking",
    "ComplexLanePacking",
    "LanePacking",
    "Packing",
    "complex_lane_packing",
    "input_packing",
    "lane_packing",
    "packing_from_meta",
]

AnyPacking = Packing | LanePacking | ComplexLanePacking


def packing_from_meta(meta: dict[str, str]) -> AnyPacking:
    """The packing a header describes; ValueError naming what is missing or wrong."""
    kind = meta.get("packing")
    kinds = (FEATURE_MAJOR, LANE_STAGGERED, LANE_REPLICATED, COMPLEX_STAGGERED, COMPLEX_PARTIAL)
    if kind not in kinds:
        raise ValueError(f"unknown packing {kind!r}; expected one of {', '.join(map(repr, kinds))}")
    try:
        slots, width = int(meta["slots"]), int(meta["width"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"bad packing metadata {meta}: {e}") from None
    if kind == FEATURE_MAJOR:
        return Packing(slots, width)
    if kind in (COMPLEX_STAGGERED, COMPLEX_PARTIAL):
        return ComplexLanePacking(slots, width, staggered=kind == COMPLEX_STAGGERED)
    return LanePacking(slots, width, staggered=kind == LANE_STAGGERED)


def lane_packing(zone: HeZone) -> LanePacking | None:
    """The lane layout of an HE zone (staggered, for linear inputs), or None when its width is too narrow."""
    slots = zone.ckks.ring_dim // 2
    if not LanePacking.wide_enough(slots, zone.pack_width) or zone.lane_max_tokens == 0:
        return None
    return LanePacking(slots, zone.pack_width)


def complex_lane_packing(zone: HeZone) -> ComplexLanePacking | None:
    """The complex lane layout of an HE zone (staggered, for one token; `token_width` features per chunk,
    default `pack_width`), or None when that width is too narrow or the zone turns lanes off."""
    slots, width = zone.ckks.ring_dim // 2, zone.token_width or zone.pack_width
    if not ComplexLanePacking.wide_enough(slots, width) or zone.lane_max_tokens == 0:
        return None
    return ComplexLanePacking(slots, width)


def input_packing(zone: HeZone, tokens: int) -> AnyPacking:
    """The layout a tensor of `tokens` tokens is encrypted in for HE zone `zone`: complex lanes for one token,
    lanes for at most the zone's `lane_max_tokens` tokens, else token-batched."""
    single = complex_lane_packing(zone)
    if single is not None and tokens == 1:
        return single
    lane = lane_packing(zone)
    if lane is not None and tokens <= zone.lane_max_tokens:
        return lane
    return Packing(zone.ckks.ring_dim // 2, zone.pack_width)
