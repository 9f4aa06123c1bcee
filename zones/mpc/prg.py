"""The MPC zone's cryptographic pseudo-random generator: AES-256 in counter mode keyed by an OS-random seed.

Every value that hides data in the MPC zone (pairwise zero-sharings, the dealer's triples and masks, weight
masks) is drawn from a `Prg`. A seed comes from the OS CSPRNG (`fresh_seed`, os.urandom); the stream is the AES
keystream under that seed, read as little-endian int64 ring elements: uniform over all 2^64 values, and the
same for everyone holding the seed and drawing the same sizes in the same order (that is how two parties draw
the two halves of a zero-sharing, and a party and the dealer the party's share of a triple).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32       # an AES-256 key
_CHUNK = 1 << 20      # keystream bytes produced per call: bounds the zero buffer, whatever the draw's size
_ZEROS = bytes(_CHUNK)
_SMALL = 1 << 16      # below this many bytes, one `update` and a copy is cheaper than a numpy view

Size = int | Sequence[int] | torch.Size


def fresh_seed() -> bytes:
    """A new seed from the OS CSPRNG."""
    return os.urandom(SEED_BYTES)


def _shape(size: Size) -> tuple[int, ...]:
    dims = (size,) if isinstance(size, int) else tuple(size)
    if not all(isinstance(d, int) and d >= 0 for d in dims):
        raise ValueError(f"not a tensor size: {size!r}")
    return tuple(int(d) for d in dims)


class Prg:
    """A deterministic stream of uniform ring elements and bits under a 32-byte seed (AES-256-CTR, counter from
    zero). Not thread-safe; one stream per purpose and peer."""

    device = torch.device("cpu")  # where its tensors live (CrypTen asks its generators for this)

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
            raise ValueError(f"a Prg seed is {SEED_BYTES} bytes")
        self._stream = Cipher(algorithms.AES(bytes(seed)), modes.CTR(bytes(16))).encryptor()

    def __repr__(self) -> str:
        return "Prg(AES-256-CTR)"  # never the seed

    def ring(self, size: Size) -> torch.Tensor:
        """int64 tensor of `size`, each element uniform over all 2^64 values of the ring."""
        shape = _shape(size)
        count = math.prod(shape)
        nbytes = 8 * count
        if nbytes < _SMALL:
            return torch.frombuffer(bytearray(self._stream.update(_ZEROS[:nbytes])), dtype=torch.int64,
                                    count=count).view(shape) if count else torch.empty(shape, dtype=torch.int64)
        out = torch.empty(count, dtype=torch.int64)
        raw = out.numpy().data.cast("B")
        zeros = memoryview(_ZEROS)
        for start in range(0, nbytes, _CHUNK):
            stop = min(start + _CHUNK, nbytes)
            self._stream.update_into(zeros[:stop - start], raw[start:stop])
        return out.view(shape)

    def bits(self, size: Size, bitlength: int = 64) -> torch.Tensor:
        """int64 tensor of `size`, each element uniform in [0, 2^bitlength) (the whole ring for 64, as CrypTen's
        k-bit tensors are). Always 8 stream bytes per element, so the stream position depends on sizes alone."""
        if not 1 <= bitlength <= 64:
            raise ValueError(f"bitlength must be 1..64, not {bitlength}")
        values = self.ring(size)
        if bitlength < 64:
            values.bitwise_and_((1 << bitlength) - 1)
        return values
