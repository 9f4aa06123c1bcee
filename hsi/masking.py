"""Bounded statistical masks: how a tensor crosses between CKKS ciphertexts and MPC shares (docs/design.md, "Masks").

A ring-uniform share cannot be CKKS-encrypted and a ciphertext cannot be split into ring-uniform shares,
so the HE <-> MPC conversions use real masks uniform in +-2^bits, drawn from the OS CSPRNG: a value x of
magnitude at most B, masked as x - r, is hidden by log2(2^bits / B) bits (the statistical distance of x - r
from r is B / 2^bits). Both sides are then fixed-point shares that sum to x in Z_2^64, which is what an MPC
party adopts (and re-randomises with a zero sharing).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # the planner imports this module, and the engine module imports the planner
    from hsi.transport.tensor import StoredTensor

BOUNDED = "bounded"  # share meta: a bounded (statistically hiding) share, not a ring-uniform one
PRESCALE = "prescale_bits"  # meta: the value travels multiplied by 2^-prescale_bits
PIECES = "pieces"  # meta: the tensor arrives in this many pieces (ciphertext + mask) to be added up
TO_HE = "to_he"  # share meta: an MPC output bound for an HE zone, through the enclave (mpc->he)
MASK_SEED = "mask_seed"  # meta, to the enclave only: hex seed of the ring-uniform mask u of an he->mpc conversion
MASK_SEED_BYTES = 32


def uniform_mask(shape: tuple[int, ...], bits: int) -> NDArray[Any]:
    """Reals uniform in [-2^bits, 2^bits) with 53 random bits each, from the OS CSPRNG."""
    count = int(np.prod(shape)) if shape else 1
    raw = np.frombuffer(os.urandom(8 * count), dtype="<u8") >> np.uint64(11)
    unit = raw.astype(np.float64) / float(1 << 53)  # [0, 1)
    return ((unit * 2.0 - 1.0) * float(2 ** bits)).reshape(shape)


def fresh_mask_seed() -> bytes:
    """A seed for `ring_mask`, from the OS CSPRNG."""
    return os.urandom(MASK_SEED_BYTES)


def ring_mask(seed: bytes, shape: tuple[int, ...]) -> NDArray[np.int64]:
    """int64 values of `shape`, uniform over the whole ring Z_2^64: the AES-256-CTR keystream under `seed`."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if len(seed) != MASK_SEED_BYTES:
        raise ValueError(f"a mask seed is {MASK_SEED_BYTES} bytes, not {len(seed)}")
    count = int(np.prod(shape)) if shape else 1
    stream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(8 * count))
    return np.frombuffer(stream, dtype="<i8").reshape(shape)


def hide(share: StoredTensor, mask: NDArray[np.int64], sign: int) -> StoredTensor:
    """A bounded share plus (`sign` 1) or minus (-1) a ring-uniform mask: a ring-uniform share of the same
    sharing, no longer marked bounded."""
    from hsi.transport.tensor import StoredTensor

    ring = np.frombuffer(share.data, dtype="<i8").reshape(share.shape)
    with np.errstate(over="ignore"):
        hidden = ring + mask if sign > 0 else ring - mask
    meta = {k: v for k, v in share.meta.items() if k != BOUNDED}
    return StoredTensor(share.encoding, share.dtype, share.shape, hidden.astype("<i8").tobytes(), meta)


def hiding_bits(mask_bits: int, bound: float) -> float:
    """Bits by which a mask uniform in +-2^mask_bits hides values of magnitude at most `bound`."""
    return mask_bits - math.log2(max(bound, 1e-300))


def prescale_for(mask_bits: int, bound: float, target_bits: float) -> int:
    """The power of two k by which values of magnitude `bound` must shrink before a +-2^mask_bits mask
    hides them by `target_bits` (0 when it already does)."""
    short = target_bits - hiding_bits(mask_bits, bound)
    return max(0, math.ceil(short))


def bounded_share(values: NDArray[Any], index: int, count: int, precision: int, prescale: int = 0) -> StoredTensor:
    """One party's share of a bounded sharing: round(values * 2^prescale * 2^precision) in the ring."""
    import torch

    from hsi.transport.shares import encode_fixed, share_meta
    from hsi.transport.tensor import StoredTensor
    from protos import tensor_pb2 as pb

    ring = encode_fixed(torch.from_numpy(np.asarray(values, dtype=np.float64) * float(2 ** prescale)), precision)
    meta = share_meta(index, count, precision) | {BOUNDED: "1"}
    return StoredTensor(pb.SHARE, "int64", tuple(ring.shape), ring.astype("<i8").tobytes(), meta)


def bounded_values(t: StoredTensor) -> NDArray[Any]:
    """The real values a bounded share holds (its ring elements are small signed integers)."""
    precision = int(t.meta["precision"])
    ring = np.frombuffer(t.data, dtype="<i8").reshape(t.shape)
    return ring.astype(np.float64) / float(1 << precision)
