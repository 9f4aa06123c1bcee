"""The enclave's conversions hand out only shares and ciphertexts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hsi.ckks.packing import Packing
from hsi.policy import CkksParams
from hsi.transport.attestation import measurement
from zones.common.ckks.crypto import decrypt_matrix, encrypt_matrix
from zones.tee.hsm import Hsm
from zones.tee.keystore import KeyStore

PARAMS = CkksParams(ring_dim=1 << 14)


def test_enclave_conversions_return_only_shares_and_ciphertexts(hsm: Hsm, tmp_path: Path) -> None:
    import torch

    from hsi.masking import bounded_share, fresh_mask_seed, hide, ring_mask, uniform_mask
    from hsi.transport.shares import combine, split
    from zones.common.ckks.tensor import CipherTensor, from_stored
    from zones.tee.convert import ConversionError, decrypt_to_share, encrypt_share, reencrypt

    store = KeyStore(hsm, tmp_path, measurement())
    store.create("a", PARAMS)
    store.create("b", PARAMS)
    ctx, keys = store.open("a")
    packing = Packing(ctx.slots, 512)
    x = np.random.default_rng(1).normal(size=(5, 384)) * 4
    r = uniform_mask(x.shape, 28)
    masked = CipherTensor(encrypt_matrix(ctx, keys.public, packing, x - r), packing, 5, 384).to_stored()
    # he -> mpc: the enclave's share x - r - u and the HE host's r + u add up to x; u is the ring-uniform mask
    # the seed expands to, so the share that leaves the enclave spans the ring
    seed = fresh_mask_seed()
    share = decrypt_to_share(store, "a", masked, 1, 2, 16, 0, seed)
    assert share.meta["share_index"] == "1" and "bounded" not in share.meta
    ring = np.frombuffer(share.data, dtype="<i8")
    # 1,920 values: the share of negatives is 0.5 +- 0.0114 (one sigma); 0.05 is over 4 sigmas
    assert np.abs(ring.astype(np.float64)).max() > 2.0**62 and abs(float((ring < 0).mean()) - 0.5) < 0.05
    host = hide(bounded_share(r, 0, 2, 16), ring_mask(seed, r.shape), +1)
    whole = combine("x", [share, host])
    assert float((whole.double() - torch.from_numpy(x)).abs().max()) < 1e-4
    unmasked = hide(share, ring_mask(seed, r.shape), +1)  # what the enclave alone holds: x - r, bounded
    assert np.abs(np.frombuffer(unmasked.data, dtype="<i8")).max() < 2**(28 + 16 + 1)
    # mpc -> he: a bounded share encrypts; a ring-uniform one is refused
    bounded = bounded_share(x - r, 1, 2, 16)
    ct = from_stored(encrypt_share(store, "a", bounded, packing), PARAMS.ring_dim, keys.public.GetKeyTag())
    assert np.abs(decrypt_matrix(ctx, keys.secret, packing, ct.blocks, 5, 384) - (x - r)).max() < 1e-3
    with pytest.raises(ConversionError, match="bounded"):
        encrypt_share(store, "a", split(torch.from_numpy(x), 2, 16)[0], packing)
    # re-encryption: the same tensor under key b, which key a's ciphertexts are not
    bctx, bkeys = store.open("b")
    moved = from_stored(reencrypt(store, "a", masked, "b"), PARAMS.ring_dim, bkeys.public.GetKeyTag())
    assert np.abs(decrypt_matrix(bctx, bkeys.secret, packing, moved.blocks, 5, 384) - (x - r)).max() < 1e-3
    with pytest.raises(ConversionError, match="another key"):
        reencrypt(store, "b", masked, "a")
