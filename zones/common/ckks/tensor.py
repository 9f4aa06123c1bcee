"""CKKS tensors on the wire: a grid of serialised ciphertexts with its packing, shape, level and key tag."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import openfhe as fhe

from hsi.ckks.packing import AnyPacking, packing_from_meta
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb

log = logging.getLogger("hsi.zone")


class CiphertextError(ValueError):
    """Bytes or metadata that do not make a ciphertext tensor of the expected context and key."""


@dataclass
class CipherTensor:
    """A (tokens, features) matrix as ciphertexts [token block][feature chunk]."""

    blocks: list[list[fhe.Ciphertext]]
    packing: AnyPacking
    tokens: int
    features: int

    @property
    def level(self) -> int:
        """The (common) level of the ciphertexts: rescales already spent."""
        return int(self.blocks[0][0].GetLevel())

    def to_stored(self) -> StoredTensor:
        """Serialise for a zone's store or the wire."""
        blobs = [fhe.Serialize(ct, fhe.BINARY) for row in self.blocks for ct in row]
        meta = {**self.packing.meta(), "grid": f"{len(self.blocks)},{len(self.blocks[0])}",
                "lengths": ",".join(str(len(b)) for b in blobs), "level": str(self.level),
                "key_tag": self.blocks[0][0].GetKeyTag()}
        return StoredTensor(pb.CKKS, "ckks", (self.tokens, self.features), b"".join(blobs), meta)


def from_stored(t: StoredTensor, ring_dim: int, key_tag: str) -> CipherTensor:
    """Deserialise a stored ckks tensor, checking its layout, its ring dimension and that it is under `key_tag`.
    CiphertextError names what is wrong; OpenFHE's own messages (they carry its build paths) only reach the log."""
    if t.encoding != pb.CKKS:
        raise CiphertextError(f"expected a ckks tensor, got {t.encoding_name}")
    try:
        packing = packing_from_meta(t.meta)
        nb, nc = (int(v) for v in t.meta["grid"].split(","))
        lengths = [int(v) for v in t.meta["lengths"].split(",")]
        tokens, features = (int(d) for d in t.shape)
    except (KeyError, ValueError) as e:
        raise CiphertextError(f"bad ckks tensor metadata: {e}") from None
    if packing.slots != ring_dim // 2:
        raise CiphertextError(f"packing has {packing.slots} slots; this zone's ring dimension {ring_dim} has "
                              f"{ring_dim // 2}")
    if packing.grid(tokens, features) != (nb, nc) or len(lengths) != nb * nc or sum(lengths) != len(t.data):
        raise CiphertextError(f"ckks tensor of shape {list(t.shape)} does not match grid {nb}x{nc} and "
                              f"{len(lengths)} ciphertexts totalling {len(t.data)} bytes")
    cts: list[fhe.Ciphertext] = []
    pos = 0
    for n in lengths:
        try:
            ct = fhe.DeserializeCiphertextString(t.data[pos:pos + n], fhe.BINARY)
            # Deserialize returns None for some malformed input (e.g. zero bytes): asking it for a context fails
            ring = int(ct.GetCryptoContext().GetRingDimension())
        except Exception as e:  # OpenFHE/cereal raise various types for malformed input
            log.info("ciphertext %d of a ckks tensor does not deserialise: %s: %s", len(cts), type(e).__name__, e)
            raise CiphertextError(f"ciphertext {len(cts)} does not deserialise") from None
        if ring != ring_dim:
            raise CiphertextError(f"ciphertext {len(cts)} has ring dimension {ring}, not {ring_dim}")
        if ct.GetKeyTag() != key_tag:
            raise CiphertextError(f"ciphertext {len(cts)} is encrypted under another key than the one installed")
        cts.append(ct)
        pos += n
    levels = {ct.GetLevel() for ct in cts}
    if len(levels) != 1:
        raise CiphertextError(f"ciphertexts of one tensor are at different levels {sorted(levels)}")
    return CipherTensor([cts[i * nc:(i + 1) * nc] for i in range(nb)], packing, tokens, features)
