"""Key generation, encryption and decryption of packed matrices.

Only a key holder runs these: the TEE key service (and, until it exists, the test
process). The HE zone itself never holds a secret key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openfhe as fhe

from zones.common.ckks.packing import AnyPacking
from zones.common.ckks.params import Context


@dataclass(frozen=True)
class KeyPair:
    """A CKKS key pair of one context."""

    public: fhe.PublicKey
    secret: fhe.PrivateKey


def generate_keys(ctx: Context, rotations: list[int]) -> KeyPair:
    """A new key pair, with relinearisation keys and rotation keys for exactly `rotations`."""
    kp = ctx.cc.KeyGen()
    ctx.cc.EvalMultKeyGen(kp.secretKey)
    if rotations:
        ctx.cc.EvalRotateKeyGen(kp.secretKey, sorted(set(rotations)))
    return KeyPair(kp.publicKey, kp.secretKey)


def encrypt_matrix(ctx: Context, public: fhe.PublicKey, packing: AnyPacking,
                   x: np.ndarray) -> list[list[fhe.Ciphertext]]:
    """Ciphertexts [token block][feature chunk] of a (tokens, features) matrix."""
    return [[ctx.cc.Encrypt(public, ctx.cc.MakeCKKSPackedPlaintext(v)) for v in row]
            for row in packing.pack(np.asarray(x, dtype=np.float64))]


def decrypt_matrix(ctx: Context, secret: fhe.PrivateKey, packing: AnyPacking, blocks: list[list[fhe.Ciphertext]],
                   tokens: int, features: int) -> np.ndarray:
    """The (tokens, features) matrix the ciphertexts hold."""
    vectors = []
    for row in blocks:
        out = []
        for ct in row:
            pt = ctx.cc.Decrypt(ct, secret)
            pt.SetLength(packing.slots)
            out.append(np.array(pt.GetCKKSPackedValue()))
        vectors.append(out)
    return packing.unpack(vectors, tokens, features)


def add_plain_matrix(cc: fhe.CryptoContext, packing: AnyPacking, blocks: list[list[fhe.Ciphertext]],
                     x: np.ndarray) -> list[list[fhe.Ciphertext]]:
    """The ciphertexts plus a plaintext (tokens, features) matrix, encoded at each ciphertext's level."""
    return [[cc.EvalAdd(c, cc.MakeCKKSPackedPlaintext(v, 1, c.GetLevel())) for c, v in zip(row, vrow, strict=True)]
            for row, vrow in zip(blocks, packing.pack(np.asarray(x, dtype=np.float64)), strict=True)]
