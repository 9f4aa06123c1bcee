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
from zones.common.masking import uniform_mask


@dataclass(frozen=True)
class KeyPair:
    """A CKKS key pair of one context."""

    public: fhe.PublicKey
    secret: fhe.PrivateKey


def conjugation_index(cc: fhe.CryptoContext) -> int:
    """The automorphism that conjugates every slot."""
    return 2 * cc.GetRingDimension() - 1


def automorphism_keygen(cc: fhe.CryptoContext, secret: fhe.PrivateKey, rotations: list[int]) -> None:
    """Install in OpenFHE's key map the rotation keys for exactly `rotations` and the conjugation key (the
    complex lane layout's linear layers conjugate once per output chunk)."""
    if rotations:
        cc.EvalRotateKeyGen(secret, sorted(set(rotations)))
    conjugation = cc.EvalAutomorphismKeyGen(secret, [conjugation_index(cc)])
    fhe.CryptoContext.InsertEvalAutomorphismKey(conjugation, secret.GetKeyTag())  # added to the rotation keys


def generate_keys(ctx: Context, rotations: list[int]) -> KeyPair:
    """A new key pair, with relinearisation keys, rotation keys for exactly `rotations` and the conjugation
    key."""
    kp = ctx.cc.KeyGen()
    ctx.cc.EvalMultKeyGen(kp.secretKey)
    automorphism_keygen(ctx.cc, kp.secretKey, rotations)
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


def add_plain_slots(cc: fhe.CryptoContext, blocks: list[list[fhe.Ciphertext]],
                    vectors: list[list[np.ndarray]]) -> list[list[fhe.Ciphertext]]:
    """The ciphertexts plus slot vectors of the same grid, encoded at each ciphertext's level."""
    return [[cc.EvalAdd(c, cc.MakeCKKSPackedPlaintext(v, 1, c.GetLevel())) for c, v in zip(row, vrow, strict=True)]
            for row, vrow in zip(blocks, vectors, strict=True)]


def mask_slots(cc: fhe.CryptoContext, packing: AnyPacking, blocks: list[list[fhe.Ciphertext]], tokens: int,
               features: int, bits: int) -> tuple[np.ndarray, list[list[fhe.Ciphertext]]]:
    """(r, ct(x - m)) for the he->mpc conversion: m a fresh mask uniform in +-2^bits in the real and the imaginary
    part of every slot (a partial output's every lane, padding and unused token slots included, so a decryptor
    sees nothing unmasked), r the (tokens, features) values m unpacks to, which the decryptor's unpacking of
    x - m completes to x."""
    masks = [[uniform_mask((packing.slots,), bits) + 1j * uniform_mask((packing.slots,), bits) for _ in row]
             for row in blocks]
    r = packing.unpack(masks, tokens, features)
    return r, add_plain_slots(cc, blocks, [[-m for m in row] for row in masks])


def add_plain_matrix(cc: fhe.CryptoContext, packing: AnyPacking, blocks: list[list[fhe.Ciphertext]],
                     x: np.ndarray) -> list[list[fhe.Ciphertext]]:
    """The ciphertexts plus a plaintext (tokens, features) matrix, encoded at each ciphertext's level."""
    return add_plain_slots(cc, blocks, packing.pack(np.asarray(x, dtype=np.float64)))
