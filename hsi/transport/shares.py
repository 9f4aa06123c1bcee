"""Additive secret shares of fixed-point tensors: the `share` encoding every zone speaks.

A real tensor x becomes round(x * 2^precision) in the ring Z_2^64 (int64 with wrap-around), split into n
shares that sum to it; any n-1 of them are uniformly random. This is CrypTen's arithmetic sharing, so an
MPC party adopts a share as it is.
"""

from __future__ import annotations

import os
from typing import Any

import grpc
import numpy as np
import torch
from numpy.typing import NDArray

from hsi.transport.codec import encode_tensor
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb

INTEGER = "integer"  # meta flag: the value is an integer (a token id); reconstruct as int64


def random_ring(shape: tuple[int, ...]) -> NDArray[Any]:
    """Uniform ring elements from the operating system's CSPRNG."""
    count = int(np.prod(shape)) if shape else 1
    return np.frombuffer(os.urandom(8 * count), dtype="<i8").reshape(shape).copy()


def encode_fixed(x: torch.Tensor, precision: int) -> NDArray[Any]:
    """round(x * 2^precision) as int64; ValueError when a value does not fit the ring's headroom."""
    scaled = x.detach().double().numpy() * float(1 << precision)
    limit = float(1 << 62)  # leave headroom: products are truncated after a multiplication
    if not np.isfinite(scaled).all() or np.abs(scaled).max(initial=0.0) >= limit:
        raise ValueError(f"tensor values up to {float(x.abs().max()):.3g} do not fit {precision}-bit fixed point")
    return np.rint(scaled).astype("<i8")


def split(x: torch.Tensor, parties: int, precision: int, integer: bool = False) -> list[StoredTensor]:
    """`parties` share tensors of x; share i goes to the MPC party of rank i."""
    ring = encode_fixed(x, precision)
    shares = [random_ring(ring.shape) for _ in range(parties - 1)]
    with np.errstate(over="ignore"):
        last = ring - np.sum(shares, axis=0, dtype="<i8") if shares else ring
    out = []
    for i, s in enumerate([*shares, last]):
        meta = share_meta(i, parties, precision, integer)
        out.append(StoredTensor(pb.SHARE, "int64", tuple(ring.shape), s.astype("<i8").tobytes(), meta))
    return out


def share_meta(index: int, count: int, precision: int, integer: bool = False) -> dict[str, str]:
    """The meta block of one share tensor."""
    meta = {"share_index": str(index), "share_count": str(count), "precision": str(precision)}
    if integer:
        meta[INTEGER] = "1"
    return meta


def share_index(name: str, t: StoredTensor) -> tuple[int, int, int]:
    """(index, count, precision) of a share tensor; ZoneError naming what is malformed."""
    if t.encoding != pb.SHARE:
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {name!r} is {t.encoding_name}, not a share")
    try:
        index, count, precision = (int(t.meta[k]) for k in ("share_index", "share_count", "precision"))
    except (KeyError, ValueError):
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                        f"share {name!r} lacks integer share_index/share_count/precision metadata") from None
    if t.dtype != "int64" or not 0 <= index < count or not 8 <= precision <= 32 or count < 2:
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                        f"share {name!r} is malformed: dtype {t.dtype}, index {index} of {count}, "
                        f"precision {precision}")
    want = 8 * (int(np.prod(t.shape)) if t.shape else 1)
    if len(t.data) != want:
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                        f"share {name!r} holds {len(t.data)} bytes, not the {want} of shape {list(t.shape)}")
    return index, count, precision


def ring_of(t: StoredTensor) -> NDArray[Any]:
    """The int64 ring elements of a share tensor."""
    return np.frombuffer(t.data, dtype="<i8").reshape(t.shape)


def combine(name: str, shares: list[StoredTensor]) -> torch.Tensor:
    """The tensor the shares of `name` add up to (float32, or int64 for integer values)."""
    if not shares:
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"no shares of {name!r}")
    facts = [share_index(name, s) for s in shares]
    index, count, precision = zip(*facts, strict=True)
    if sorted(index) != list(range(count[0])) or len(set(count)) != 1 or len(set(precision)) != 1:
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                        f"shares of {name!r} do not form one sharing: indices {sorted(index)}, counts "
                        f"{sorted(set(count))}, precisions {sorted(set(precision))}")
    if len({s.shape for s in shares}) != 1:
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"shares of {name!r} differ in shape")
    with np.errstate(over="ignore"):
        ring = np.sum([ring_of(s) for s in shares], axis=0, dtype="<i8")
    value = torch.from_numpy(ring.astype(np.float64) / float(1 << precision[0]))
    if shares[0].meta.get(INTEGER) == "1":
        return value.round().to(torch.int64)
    return value.to(torch.float32)


class ShareAssembler:
    """Collects the shares of a tensor arriving from several parties; reconstructs once all have come."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[int, StoredTensor]] = {}

    def add(self, name: str, share: StoredTensor) -> StoredTensor | None:
        """Keep one share; the reconstructed plaintext tensor when it completes the sharing, else None."""
        index, count, _ = share_index(name, share)
        parts = self._pending.setdefault(name, {})
        if index in parts:
            raise ZoneError(grpc.StatusCode.ALREADY_EXISTS, f"share {index} of {name!r} arrived twice")
        parts[index] = share
        if len(parts) < count:
            return None
        del self._pending[name]
        value = combine(name, list(parts.values()))
        dtype, shape, data = encode_tensor(value)
        return StoredTensor(pb.PLAIN, dtype, tuple(shape), data)
