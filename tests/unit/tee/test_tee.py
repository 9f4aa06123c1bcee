"""The simulated enclave's parts: HSM sealing and signing, key store, attestation, audit chain, access control."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
import openfhe as fhe
import pytest

from orchestrator.policy import CkksParams, KeyGrant
from tests.unit.tee.conftest import MODULE, PIN
from zones.common.attestation import AttestationError, Quote, QuoteVerifier, quote_body
from zones.common.ckks.crypto import conjugation_index, decrypt_matrix, encrypt_matrix
from zones.common.ckks.packing import Packing
from zones.tee.access import AccessControl, Denied
from zones.tee.audit import AuditLog, read_log, verify_records
from zones.tee.hsm import Hsm, HsmConfig, HsmError, SealError
from zones.tee.keystore import KeyStore, KeyStoreError
from zones.tee.measurement import measurement

PARAMS = CkksParams(ring_dim=1 << 14)


def test_hsm_keys_stay_inside(hsm: Hsm) -> None:
    assert hsm.kek_extractable is False
    blob = hsm.seal(b"secret key bytes", b"aad")
    assert hsm.unseal(blob, b"aad") == b"secret key bytes"
    with pytest.raises(SealError, match="sealed for another key id or enclave measurement"):
        hsm.unseal(blob, b"other aad")
    flipped = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]
    with pytest.raises(SealError, match="authentication failed"):
        hsm.unseal(flipped, b"aad")


def test_wrong_pin_or_token(token_conf: Path) -> None:
    with pytest.raises(HsmError, match="cannot open PKCS#11 token 'hsi-test'"):
        Hsm(HsmConfig(MODULE, "hsi-test", "wrong"))
    with pytest.raises(HsmError, match="cannot open PKCS#11 token 'nope'"):
        Hsm(HsmConfig(MODULE, "nope", PIN))


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


def _quote(hsm: Hsm, nonce: bytes, meas: bytes, when: int) -> Quote:
    pub = b"\x07" * 32
    return Quote(meas, pub, nonce, when, hsm.sign(quote_body(meas, pub, nonce, when)))


def test_attestation(hsm: Hsm) -> None:
    now = int(time.time())
    verifier = QuoteVerifier(measurement(), hsm.platform_public_key())
    nonce = b"n" * 32
    good = _quote(hsm, nonce, measurement(), now)
    verifier.verify(good, nonce)
    with pytest.raises(AttestationError, match="replayed"):
        verifier.verify(good, nonce)
    with pytest.raises(AttestationError, match="another nonce"):
        verifier.verify(_quote(hsm, b"m" * 32, measurement(), now), b"o" * 32)
    with pytest.raises(AttestationError, match="differs from the pinned"):
        verifier.verify(_quote(hsm, b"p" * 32, b"\x00" * 32, now), b"p" * 32)
    forged = Quote(measurement(), b"\x07" * 32, b"q" * 32, now, b"\x00" * 64)
    with pytest.raises(AttestationError, match="signature does not verify"):
        verifier.verify(forged, b"q" * 32)
    with pytest.raises(AttestationError, match="stale"):
        verifier.verify(_quote(hsm, b"r" * 32, measurement(), now - 3600), b"r" * 32)


def test_audit_chain_detects_edits_removals_reorders(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(4):
        log.append("owner/h", "get_public_material", "k", f"s{i}", "allow", "granted")
    lines = path.read_text().splitlines()
    assert verify_records(read_log(path)) == []

    def problems(new_lines: list[str]) -> list[str]:
        path.write_text("\n".join(new_lines) + "\n")
        return verify_records(read_log(path))

    edited = json.loads(lines[1])
    edited["decision"] = "deny"
    assert any("record 1 was edited" in p for p in problems([lines[0], json.dumps(edited), *lines[2:]]))
    assert any("a record was removed" in p for p in problems([lines[0], *lines[2:]]))
    assert any("reordered" in p for p in problems([lines[0], lines[2], lines[1], lines[3]]))
    path.write_text("\n".join(lines) + "\n")
    restarted = AuditLog(path)  # reopening keeps the chain
    restarted.append("x/y", "attest", "", "", "allow", "granted")
    assert verify_records(read_log(path)) == [] and len(read_log(path)) == 5
    path.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match="not intact, refusing to append"):
        AuditLog(path)


def test_access_control_grants_limits_and_audit(tmp_path: Path) -> None:
    grants = [KeyGrant(principal="owner/h", key="k", operations=["get_public_material"], max_calls=2),
              KeyGrant(principal="keyholder/admin", key="*", operations=["create", "rotate"], max_sessions=1)]
    log = AuditLog(tmp_path / "audit.log")
    ac = AccessControl(grants, log)
    ac.authorize("owner/h", "get_public_material", "k")
    with pytest.raises(Denied) as e:
        ac.authorize("mallory/x", "get_public_material", "k")
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(Denied) as e:
        ac.authorize("owner/h", "destroy", "k")
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED and "no grant for destroy" in e.value.reason
    ac.authorize("owner/h", "get_public_material", "k")
    with pytest.raises(Denied) as e:
        ac.authorize("owner/h", "get_public_material", "k")
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "allows 2 calls" in e.value.reason
    # the limit survives a restart: counts come from the audit log
    with pytest.raises(Denied):
        AccessControl(grants, AuditLog(tmp_path / "audit.log")).authorize("owner/h", "get_public_material", "k")
    ac.authorize("keyholder/admin", "create", "k2", session="a")
    with pytest.raises(Denied, match="allows 1 sessions"):
        ac.authorize("keyholder/admin", "create", "k2", session="b")
    decisions = [(r.principal, r.operation, r.decision) for r in log.records()]
    assert decisions == [("owner/h", "get_public_material", "allow"), ("mallory/x", "get_public_material", "deny"),
                         ("owner/h", "destroy", "deny"), ("owner/h", "get_public_material", "allow"),
                         ("owner/h", "get_public_material", "deny"), ("owner/h", "get_public_material", "deny"),
                         ("keyholder/admin", "create", "allow"), ("keyholder/admin", "create", "deny")]
    assert verify_records(log.records()) == []


def test_conversion_grants_name_their_recipients(tmp_path: Path) -> None:
    grants = [KeyGrant(principal="owner/he", key="k", operations=["decrypt_to_share"], recipients=["keyholder/mpc"]),
              KeyGrant(principal="keyholder/mpc", key="k", operations=["encrypt_share"])]
    log = AuditLog(tmp_path / "audit.log")
    ac = AccessControl(grants, log)
    ac.authorize("owner/he", "decrypt_to_share", "k", "s", recipient="keyholder/mpc")
    with pytest.raises(Denied, match="does not name 'owner/mpc' as a recipient") as e:
        ac.authorize("owner/he", "decrypt_to_share", "k", "s", recipient="owner/mpc")
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(Denied, match="it names none"):  # no recipients: denied by default
        ac.authorize("keyholder/mpc", "encrypt_share", "k", "s", recipient="owner/he")
    assert [r.decision for r in log.records()] == ["allow", "deny", "deny"]
    assert log.records()[0].reason == "granted, to keyholder/mpc"


def test_enclave_conversions_return_only_shares_and_ciphertexts(hsm: Hsm, tmp_path: Path) -> None:
    import torch

    from zones.common.ckks.tensor import CipherTensor, from_stored
    from zones.common.masking import bounded_share, uniform_mask
    from zones.common.shares import combine, split
    from zones.tee.convert import ConversionError, decrypt_to_share, encrypt_share, reencrypt

    store = KeyStore(hsm, tmp_path, measurement())
    store.create("a", PARAMS)
    store.create("b", PARAMS)
    ctx, keys = store.open("a")
    packing = Packing(ctx.slots, 512)
    x = np.random.default_rng(1).normal(size=(5, 384)) * 4
    r = uniform_mask(x.shape, 28)
    masked = CipherTensor(encrypt_matrix(ctx, keys.public, packing, x - r), packing, 5, 384).to_stored()
    # he -> mpc: the enclave's share x - r and the HE host's r add up to x
    share = decrypt_to_share(store, "a", masked, 1, 2, 16, 0)
    assert share.meta["share_index"] == "1" and share.meta["bounded"] == "1"
    whole = combine("x", [share, bounded_share(r, 0, 2, 16)])
    assert float((whole.double() - torch.from_numpy(x)).abs().max()) < 1e-4
    # mpc -> he: a bounded share encrypts; a ring-uniform one is refused
    ct = from_stored(encrypt_share(store, "a", share, packing), PARAMS.ring_dim, keys.public.GetKeyTag())
    assert np.abs(decrypt_matrix(ctx, keys.secret, packing, ct.blocks, 5, 384) - (x - r)).max() < 1e-3
    with pytest.raises(ConversionError, match="bounded"):
        encrypt_share(store, "a", split(torch.from_numpy(x), 2, 16)[0], packing)
    # re-encryption: the same tensor under key b, which key a's ciphertexts are not
    bctx, bkeys = store.open("b")
    moved = from_stored(reencrypt(store, "a", masked, "b"), PARAMS.ring_dim, bkeys.public.GetKeyTag())
    assert np.abs(decrypt_matrix(bctx, bkeys.secret, packing, moved.blocks, 5, 384) - (x - r)).max() < 1e-3
    with pytest.raises(ConversionError, match="another key"):
        reencrypt(store, "b", masked, "a")
