"""Key generation, encryption and decryption of packed matrices.

Only a key holder runs these: the TEE key service (and, until it exists, the test
process). The HE zone itself never holds a secret key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import openfhe as fhe

from hsi.ckks.packing import AnyPacking
from hsi.masking import uniform_mask
from zones.common.ckks.params import Context


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


def encrypt_matrix(ctx: Context, public: fhe.PublicKey, packing: AnyPacking, x: np.ndarray,
                   zeros: Callable[[], fhe.Ciphertext] | None = None) -> list[list[fhe.Ciphertext]]:
    """Ciphertexts [token block][feature chunk] of a (tokens, features) matrix.

    With `zeros` (fresh encryptions of 0 under `public`, each used once, e.g. made ahead) a ciphertext is
    Enc(0) + encode(v), which is distributed exactly as Enc(v): the public-key encryption's randomness is all
    in Enc(0).
    """
    plaintexts = encode_matrix(ctx.cc, packing, x, 0)
    if zeros is None:
        return [[ctx.cc.Encrypt(public, p) for p in row] for row in plaintexts]
    return add_plaintexts(ctx.cc, [[zeros() for _ in row] for row in plaintexts], plaintexts)


def encrypt_zero(ctx: Context, public: fhe.PublicKey) -> fhe.Ciphertext:
    """A fresh encryption of 0 in every slot, at level 0 (for encrypt_matrix's `zeros`)."""
    return ctx.cc.Encrypt(public, ctx.cc.MakeCKKSPackedPlaintext(np.zeros(ctx.slots)))


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


@dataclass(frozen=True)
class SlotMask:
    """A fresh mask m for one ciphertext, uniform in +-2^bits in the real and the imaginary part of every slot,
    and -m encoded at `level` to be added to a ciphertext of that level."""

    values: np.ndarray
    negated: fhe.Plaintext
    level: int


def draw_slot_mask(cc: fhe.CryptoContext, bits: int, level: int) -> SlotMask:
    """A new SlotMask from the OS CSPRNG."""
    slots = cc.GetRingDimension() // 2
    m = uniform_mask((slots,), bits) + 1j * uniform_mask((slots,), bits)
    return SlotMask(m, cc.MakeCKKSPackedPlaintext(-m, 1, level), level)


def mask_slots(cc: fhe.CryptoContext, packing: AnyPacking, blocks: list[list[fhe.Ciphertext]], tokens: int,
               features: int, draw: Callable[[int], SlotMask]) -> tuple[np.ndarray, list[list[fhe.Ciphertext]]]:
    """(r, ct(x - m)) for the he->mpc conversion: m a fresh mask per ciphertext from `draw(level)` (see SlotMask;
    a partial output's every lane, padding and unused token slots are masked too, so a decryptor sees nothing
    unmasked), r the (tokens, features) values m unpacks to, which the decryptor's unpacking of x - m completes
    to x."""
    masks = [[draw(c.GetLevel()) for c in row] for row in blocks]
    r = packing.unpack([[m.values for m in row] for row in masks], tokens, features)
    return r, add_plaintexts(cc, blocks, [[m.negated for m in row] for row in masks])


def encode_matrix(cc: fhe.CryptoContext, packing: AnyPacking, x: np.ndarray, level: int) -> list[list[fhe.Plaintext]]:
    """A (tokens, features) matrix encoded in `packing` at `level`, to be added to ciphertexts of that level."""
    return [[cc.MakeCKKSPackedPlaintext(v, 1, level) for v in row] for row in packing.pack(np.asarray(x, np.float64))]


def add_plaintexts(cc: fhe.CryptoContext, blocks: list[list[fhe.Ciphertext]],
                   plaintexts: list[list[fhe.Plaintext]]) -> list[list[fhe.Ciphertext]]:
    """The ciphertexts plus plaintexts of the same grid."""
    return [[cc.EvalAdd(c, p) for c, p in zip(row, prow, strict=True)]
            for row, prow in zip(blocks, plaintexts, strict=True)]


def add_plain_matrix(cc: fhe.CryptoContext, packing: AnyPacking, blocks: list[list[fhe.Ciphertext]],
                     x: np.ndarray) -> list[list[fhe.Ciphertext]]:
    """The ciphertexts (all of one level) plus a plaintext (tokens, features) matrix."""
    return add_plaintexts(cc, blocks, encode_matrix(cc, packing, x, blocks[0][0].GetLevel()))
