"""Tensor codec: torch tensors as raw little-endian bytes with dtype and shape (never pickle)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
}


class CodecError(ValueError):
    """Bytes that do not decode to the declared dtype and shape."""


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
    if any(d < 0 for d in shape):
        raise CodecError(f"negative dimension in shape {shape}")
    count = int(np.prod(shape)) if shape else 1
    want = count * DTYPES[dtype].itemsize
    if len(data) != want:
        raise CodecError(f"{len(data)} bytes do not hold a {dtype} tensor of shape {shape} ({want} bytes)")
    arr = np.frombuffer(data, dtype=DTYPES[dtype]).reshape(shape)
    return torch.from_numpy(arr.copy())
