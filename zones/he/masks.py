"""The HE side of the conversions with MPC: he->mpc masks made ahead, mpc->he pieces encoded and added up."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
import openfhe as fhe
from numpy.typing import NDArray

from hsi.ckks.packing import AnyPacking, input_packing
from hsi.masking import BOUNDED, bounded_values
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from zones.common.ckks.crypto import SlotMask, add_plaintexts, draw_slot_mask, encode_matrix, mask_slots
from zones.common.ckks.tensor import CipherTensor
from zones.common.precompute import Precomputed
from zones.he.ciphertexts import Ciphertexts
from zones.he.keys import KeyMaterial

# Fresh he->mpc masks kept encoded ahead, per ciphertext level: a selective-smollm2 decode step masks 12
# ciphertexts, and encoding one takes 4.6 ms at N=2^14 (~0.3 MB each).
MASKS_AHEAD = 32


@dataclass(frozen=True)
class EncodedMask:
    """The co-located party's bounded share s of an mpc->he conversion, encoded (at level 0, in the layout the
    enclave encrypts that many tokens in) before the ciphertext it completes arrives."""

    share: StoredTensor
    packing: AnyPacking
    plaintexts: list[list[fhe.Plaintext]]


class ConversionMasks:
    """Masks ciphertexts into MPC shares and completes ciphertexts from an MPC zone's pieces."""

    def __init__(self, keys: KeyMaterial, ciphertexts: Ciphertexts) -> None:
        self.keys, self.ciphertexts = keys, ciphertexts
        self.pools: dict[tuple[int, int], Precomputed[SlotMask]] = {}  # (level, bits) -> masks made ahead
        self._lock = threading.Lock()

    def _draw(self, bits: int) -> Callable[[int], SlotMask]:
        """A fresh mask of `bits` bits for a ciphertext of the level it is asked for, made ahead if one is ready."""
        def draw(level: int) -> SlotMask:
            with self._lock:
                pool = self.pools.get((level, bits))
                if pool is None:
                    cc = self.keys.context()
                    pool = Precomputed(lambda: draw_slot_mask(cc, bits, level), MASKS_AHEAD,
                                       f"he-mask-level{level}")
                    self.pools[(level, bits)] = pool
            return pool.take()
        return draw

    def mask(self, name: str, t: StoredTensor, bits: int) -> tuple[NDArray[np.float64], StoredTensor]:
        """(r, ct(x - m)) for the he->mpc conversion: a fresh mask uniform in +-2^bits in every slot, and the
        values r it unpacks to (see crypto.mask_slots)."""
        ct = self.ciphertexts.read(name, t)
        r, blocks = mask_slots(self.keys.context(), ct.packing, ct.blocks, ct.tokens, ct.features, self._draw(bits))
        return r, CipherTensor(blocks, ct.packing, ct.tokens, ct.features).to_stored()

    def piece(self, name: str, t: StoredTensor) -> StoredTensor | EncodedMask:
        """One piece of an mpc->he conversion as it is kept until the other arrives: the co-located party's
        bounded share encoded already (the enclave's ciphertext usually comes later), a ciphertext as it is."""
        if t.encoding != pb.SHARE:
            return t
        if t.meta.get(BOUNDED) != "1" or len(t.shape) != 2:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"the mask of {name!r} is not a bounded (tokens, features) share")
        packing = input_packing(self.keys.spec, t.shape[0])
        return EncodedMask(t, packing, encode_matrix(self.keys.context(), packing, bounded_values(t), 0))

    def unmask(self, name: str, parts: list[StoredTensor | EncodedMask]) -> StoredTensor:
        """ct(y - s) + s = ct(y): the mpc->he conversion's two pieces (the enclave's ciphertext, the co-located
        party's bounded share s, see `piece`) made one ciphertext tensor."""
        cts = [p for p in parts if isinstance(p, StoredTensor) and p.encoding == pb.CKKS]
        masks = [p for p in parts if isinstance(p, EncodedMask)]
        if len(cts) != 1 or len(masks) != 1:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"tensor {name!r} must arrive as one ciphertext and one bounded share, got "
                            f"{[(p.share if isinstance(p, EncodedMask) else p).encoding_name for p in parts]}")
        ct, mask = self.ciphertexts.read(name, cts[0]), masks[0]
        if tuple(mask.share.shape) != (ct.tokens, ct.features):
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"the mask of {name!r} is not a bounded share of shape {[ct.tokens, ct.features]}")
        cc = self.keys.context()
        plaintexts = mask.plaintexts
        if mask.packing != ct.packing or ct.level != 0:  # not the layout the enclave encrypts in: encode again
            plaintexts = encode_matrix(cc, ct.packing, bounded_values(mask.share), ct.level)
        return self.ciphertexts.store(CipherTensor(add_plaintexts(cc, ct.blocks, plaintexts), ct.packing, ct.tokens,
                                                   ct.features))

    def clear(self) -> None:
        """Stop making masks ahead and drop those made (they are bound to the context)."""
        with self._lock:
            for pool in self.pools.values():
                pool.close()
            self.pools.clear()
