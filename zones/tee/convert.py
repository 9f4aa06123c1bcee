"""The enclave's conversions: ciphertexts to MPC shares and back, and ciphertexts to the values it computes on
and back. Every result that leaves the enclave is a share or a ciphertext."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from hsi.ckks.packing import AnyPacking
from hsi.masking import BOUNDED, MASK_SEED, MASK_SEED_BYTES, bounded_share, bounded_values, hide, ring_mask
from hsi.transport.tensor import StoredTensor
from zones.common.ckks.crypto import KeyPair, decrypt_matrix, encrypt_matrix
from zones.common.ckks.params import Context
from zones.common.ckks.tensor import CipherTensor, CiphertextError, from_stored
from zones.tee.access import Invalid, shown
from zones.tee.keystore import KeyStore

# A bounded share holds y - s with |s| <= 2^44 (the largest reshare mask a policy admits); anything larger is
# a ring-uniform share, which CKKS cannot encrypt meaningfully.
MAX_BOUNDED = 2.0 ** 46
_HEX = re.compile(r"[0-9a-f]+")


def check_seed(meta: Mapping[str, str]) -> bytes:
    """The he->mpc mask seed of a header's meta: exactly MASK_SEED_BYTES bytes in hex."""
    raw = meta.get(MASK_SEED)
    if raw is None:
        raise Invalid(f"meta[{MASK_SEED!r}]", "the seed of the ring-uniform mask; it is missing")
    if not _HEX.fullmatch(raw) or len(raw) != 2 * MASK_SEED_BYTES:
        raise Invalid(f"meta[{MASK_SEED!r}]", f"{MASK_SEED_BYTES} bytes in hex; got {shown(raw)}")
    return bytes.fromhex(raw)


class ConversionError(ValueError):
    """Input the enclave refuses to convert; the message names what is wrong."""


def _open_ct(keys: KeyStore, key: str, t: StoredTensor) -> tuple[CipherTensor, Context, KeyPair]:
    ctx, pair = keys.open(key)
    try:
        ct = from_stored(t, ctx.params.ring_dim, pair.public.GetKeyTag())
    except CiphertextError as e:
        raise ConversionError(str(e)) from None
    return ct, ctx, pair


def decrypt_values(keys: KeyStore, key: str, t: StoredTensor) -> np.ndarray:
    """The (tokens, features) matrix a ciphertext tensor under `key` holds, for use inside the enclave only."""
    ct, ctx, pair = _open_ct(keys, key, t)
    return decrypt_matrix(ctx, pair.secret, ct.packing, ct.blocks, ct.tokens, ct.features)


def encrypt_values(keys: KeyStore, key: str, values: np.ndarray, packing: AnyPacking) -> StoredTensor:
    """A (tokens, features) matrix encrypted under `key` in `packing`."""
    ctx, pair = keys.open(key)
    if packing.slots != ctx.params.ring_dim // 2:
        raise ConversionError(f"packing of {packing.slots} slots does not fit key {key!r} (ring dimension "
                              f"{ctx.params.ring_dim})")
    blocks = encrypt_matrix(ctx, pair.public, packing, values, keys.fresh_zeros(key))
    return CipherTensor(blocks, packing, values.shape[0], values.shape[1]).to_stored()


def decrypt_to_share(keys: KeyStore, key: str, t: StoredTensor, index: int, count: int, precision: int,
                     prescale: int, mask_seed: bytes) -> StoredTensor:
    """The masked ciphertext x - r decrypted into share `index` (times 2^prescale), minus the ring-uniform mask
    `mask_seed` expands to: the bounded x - r never leaves the enclave."""
    share = bounded_share(decrypt_values(keys, key, t), index, count, precision, prescale)
    return hide(share, ring_mask(mask_seed, share.shape), -1)


def encrypt_share(keys: KeyStore, key: str, share: StoredTensor, packing: AnyPacking) -> StoredTensor:
    """A bounded share y - s encrypted under `key` in `packing`."""
    if share.meta.get(BOUNDED) != "1" or len(share.shape) != 2:
        raise ConversionError("only a bounded (tokens, features) share can be encrypted; a ring-uniform share "
                              "must be re-shared with a bounded mask first")
    values = bounded_values(share)
    if np.abs(values).max(initial=0.0) > MAX_BOUNDED:
        raise ConversionError(f"share values reach {np.abs(values).max():.3g}, beyond a bounded share's "
                              f"{MAX_BOUNDED:.3g}")
    return encrypt_values(keys, key, values, packing)


def reencrypt(keys: KeyStore, key: str, t: StoredTensor, recipient: str) -> StoredTensor:
    """The ciphertext tensor under `key` as the same tensor under the `recipient` key, in the same packing."""
    ct, ctx, pair = _open_ct(keys, key, t)
    values = decrypt_matrix(ctx, pair.secret, ct.packing, ct.blocks, ct.tokens, ct.features)
    rctx, rpair = keys.open(recipient)
    if rctx.params.ring_dim != ctx.params.ring_dim:
        raise ConversionError(f"key {recipient!r} has ring dimension {rctx.params.ring_dim}, key {key!r} "
                              f"{ctx.params.ring_dim}; the packing cannot carry over")
    blocks = encrypt_matrix(rctx, rpair.public, ct.packing, values)
    return CipherTensor(blocks, ct.packing, ct.tokens, ct.features).to_stored()
