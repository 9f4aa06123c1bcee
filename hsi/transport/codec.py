"""Tensor codec: torch tensors as raw little-endian bytes with dtype and shape (never pickle)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
}


# Bounds on a declared shape, checked before anything is allocated for it: numpy takes at most 32 dimensions
# (64 from numpy 2), and no tensor a zone accepts comes near 2^48 elements.
MAX_DIMS = 32
MAX_ELEMENTS = 1 << 48


class CodecError(ValueError):
    """Bytes that do not decode to the declared dtype and shape."""


def element_count(shape: Sequence[int]) -> int:
    """The element count of `shape` (1 for a scalar), computed in Python integers so nothing overflows; CodecError
    for more than MAX_DIMS dimensions, a negative dimension or more than MAX_ELEMENTS elements (zero-size
    dimensions aside, as numpy counts them)."""
    if len(shape) > MAX_DIMS:
        raise CodecError(f"shape has {len(shape)} dimensions; at most {MAX_DIMS} are allowed")
    nonzero = 1
    for d in shape:
        if d < 0:
            raise CodecError(f"shape {list(shape)} has a negative dimension")
        nonzero *= max(d, 1)
        if nonzero > MAX_ELEMENTS:
            raise CodecError(f"shape {list(shape)} has more than 2^48 elements")
    return 0 if 0 in shape else nonzero


def encode_tensor(t: torch.Tensor) -> tuple[str, list[int], bytes]:
    """(dtype name, shape, bytes) of a tensor."""
    arr = t.detach().cpu().contiguous().numpy()
    name = str(arr.dtype)
    if name not in DTYPES:
        raise CodecError(f"dtype {name} cannot be sent; supported: {', '.join(DTYPES)}")
    return name, list(arr.shape), arr.astype(DTYPES[name], copy=False).tobytes()


def decode_tensor(dtype: str, shape: list[int], data: bytes) -> torch.Tensor:
    """A tensor from (dtype name, shape, bytes); CodecError when they disagree."""
    if dtype not in DTYPES:
        raise CodecError(f"unknown dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    want = element_count(shape) * DTYPES[dtype].itemsize
    if len(data) != want:
        raise CodecError(f"{len(data)} bytes do not hold a {dtype} tensor of shape {shape} ({want} bytes)")
    arr = np.frombuffer(data, dtype=DTYPES[dtype]).reshape(shape)
    return torch.from_numpy(arr.copy())
