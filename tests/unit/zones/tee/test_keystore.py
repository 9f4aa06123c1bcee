"""Sealed CKKS keys: they survive a restart, open nowhere else, and give fresh encryptions of zero."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openfhe as fhe
import pytest

from hsi.ckks.packing import Packing
from hsi.policy import CkksParams
from hsi.transport.attestation import measurement
from tests.support.hsm import MODULE, TOKENS
from zones.common.ckks.crypto import conjugation_index, decrypt_matrix, encrypt_matrix
from zones.tee.hsm import Hsm, HsmConfig, SealError
from zones.tee.keystore import KeyStore, KeyStoreError

PIN = TOKENS["hsi-test"]

PARAMS = CkksParams(ring_dim=1 << 14)


def test_keystore_seals_and_survives_restart(hsm: Hsm, tmp_path: Path) -> None:
    store = KeyStore(hsm, tmp_path, measurement())
    meta = store.create("k1", PARAMS)
    with pytest.raises(KeyStoreError, match="key 'k1' already exists"):
        store.create("k1", PARAMS)
    ctx, keys = store.open("k1")
    x = np.random.default_rng(0).normal(size=(4, 8))
    packing = Packing(ctx.slots, 512)
    ct = encrypt_matrix(ctx, keys.public, packing, x)
    sealed = (tmp_path / "k1.v1.sealed").read_bytes()
    assert fhe.Serialize(keys.secret, fhe.BINARY) not in sealed
    # a new process: new HSM session, new store over the same directory
    again = Hsm(HsmConfig(MODULE, "hsi-test", PIN))
    ctx2, keys2 = KeyStore(again, tmp_path, measurement()).open("k1")
    assert np.abs(decrypt_matrix(ctx2, keys2.secret, packing, ct, 4, 8) - x).max() < 1e-5
    assert store.meta("k1") == meta
    # rotation replaces the key; destruction deletes the sealed secret
    assert store.rotate("k1").version == 2 and not (tmp_path / "k1.v1.sealed").exists()
    assert store.destroy("k1").destroyed and not (tmp_path / "k1.v2.sealed").exists()
    with pytest.raises(KeyStoreError, match="key 'k1' was destroyed"):
        store.open("k1")
    again.close()


def test_encryptions_of_zero_are_fresh_and_follow_the_key(hsm: Hsm, tmp_path: Path) -> None:
    store = KeyStore(hsm, tmp_path, measurement())
    store.create("k", PARAMS)
    ctx, keys = store.open("k")
    packing = Packing(ctx.slots, 512)
    zeros = store.fresh_zeros("k")
    a, b = zeros(), zeros()
    assert fhe.Serialize(a, fhe.BINARY) != fhe.Serialize(b, fhe.BINARY)
    for z in (a, b):
        assert z.GetKeyTag() == keys.public.GetKeyTag()
        noise = decrypt_matrix(ctx, keys.secret, packing, [[z]], 16, 512)
        # a fresh public-key encryption's noise: per-slot std 1.21-1.27e-6 (6 keys x 20 draws of OpenFHE's own
        # Encrypt of 0); its max over the 8192 slots reached 1.07e-5 in 200 draws, so no slot holds a value
        assert noise.std() < 1.5e-6 and np.abs(noise).max() < 2e-5
    store.rotate("k")  # the encryptions made under the old key go with it
    _, new = store.open("k")
    assert store.fresh_zeros("k")().GetKeyTag() == new.public.GetKeyTag() != keys.public.GetKeyTag()
    store.close()


def test_sealed_key_does_not_open_elsewhere(hsm: Hsm, tmp_path: Path) -> None:
    KeyStore(hsm, tmp_path / "a", measurement()).create("k", PARAMS)
    other_build = KeyStore(hsm, tmp_path / "a", b"\x01" * 32)  # another enclave measurement
    with pytest.raises(SealError, match="sealed for another key id or enclave measurement"):
        other_build.open("k")
    (tmp_path / "b").mkdir()
    for f in (tmp_path / "a").iterdir():  # the files copied under another key id
        (tmp_path / "b" / f.name.replace("k.", "j.")).write_bytes(f.read_bytes())
    meta = json.loads((tmp_path / "b" / "j.json").read_text())
    (tmp_path / "b" / "j.json").write_text(json.dumps({**meta, "key": "j"}))
    with pytest.raises(SealError):
        KeyStore(hsm, tmp_path / "b", measurement()).open("j")
    sealed = tmp_path / "a" / "k.v1.sealed"
    blob = sealed.read_bytes()
    sealed.write_bytes(blob[:-1] + bytes([blob[-1] ^ 0x80]))
    with pytest.raises(SealError, match="authentication failed"):
        KeyStore(hsm, tmp_path / "a", measurement()).open("k")


def test_public_material_has_exactly_the_requested_rotations(hsm: Hsm, tmp_path: Path) -> None:
    store = KeyStore(hsm, tmp_path, measurement())
    store.create("k", PARAMS)
    none = store.public_material("k", [])["rotation_keys"]
    small = store.public_material("k", [16])["rotation_keys"]
    ctx, keys = store.open("k")
    installed = ctx.cc.GetExistingEvalAutomorphismKeyIndices(keys.public.GetKeyTag())
    # the rotation asked for and the conjugation every complex lane layer needs, nothing else
    assert sorted(installed) == sorted([ctx.cc.FindAutomorphismIndex(16), conjugation_index(ctx.cc)])
    large = store.public_material("k", [16, 32, 64])["rotation_keys"]
    assert 0 < len(none) < len(small) < len(large)
