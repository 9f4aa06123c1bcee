"""The enclave's key store: CKKS key pairs whose secret keys exist only sealed on disk or in enclave memory."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import openfhe as fhe

from hsi.policy import CkksParams
from zones.common.ckks.crypto import KeyPair, automorphism_keygen, encrypt_zero, generate_keys
from zones.common.ckks.material import serialize_public
from zones.common.ckks.params import Context, make_context
from zones.common.precompute import Precomputed
from zones.tee.access import check_rotations
from zones.tee.hsm import Hsm

# Encryptions of zero kept ready per open key: a selective-smollm2 decode step encrypts 10 ciphertexts, each a
# public-key encryption of 7.4 ms at N=2^14 (~0.5 MB each).
ZEROS_AHEAD = 32


class KeyStoreError(LookupError):
    """A key that does not exist, already exists or cannot be opened; the message names it."""


@dataclass(frozen=True)
class KeyMeta:
    """What is known about a key without opening it."""

    key: str
    version: int
    params_json: str
    public_key_sha256: str
    created: float
    destroyed: bool = False


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class KeyStore:
    """Creates, opens (unseals), rotates and destroys CKKS keys; sealed under the HSM's KEK."""

    def __init__(self, hsm: Hsm, directory: Path, measurement: bytes) -> None:
        self.hsm, self.dir, self.measurement = hsm, directory, measurement
        directory.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, tuple[Context, KeyPair]] = {}
        self._zeros: dict[str, Precomputed[fhe.Ciphertext]] = {}
        self._lock = threading.RLock()

    def _meta_path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise KeyStoreError(f"invalid key handle {key!r}")
        return self.dir / f"{key}.json"

    def _sealed_path(self, key: str, version: int) -> Path:
        return self.dir / f"{key}.v{version}.sealed"

    def aad(self, key: str, version: int) -> bytes:
        """Associated data of a sealed key: its id, version and the enclave measurement."""
        return b"hsi-sealed-key-v1\0" + key.encode() + b"\0" + str(version).encode() + b"\0" + self.measurement

    def meta(self, key: str) -> KeyMeta:
        """The key's metadata; KeyStoreError when there is no such key."""
        path = self._meta_path(key)
        if not path.is_file():
            raise KeyStoreError(f"no key {key!r}")
        return KeyMeta(**json.loads(path.read_text()))

    def all(self) -> list[KeyMeta]:
        """Every key, destroyed ones included."""
        return [KeyMeta(**json.loads(p.read_text())) for p in sorted(self.dir.glob("*.json"))]

    def _create_version(self, key: str, params: CkksParams, version: int) -> KeyMeta:
        ctx = make_context(params)
        keys = generate_keys(ctx, [])
        public = serialize_public(ctx.cc, keys.public)
        sealed = self.hsm.seal(fhe.Serialize(keys.secret, fhe.BINARY), self.aad(key, version))
        _write_atomic(self._sealed_path(key, version), sealed)
        _write_atomic(self.dir / f"{key}.v{version}.public", json.dumps(
            {name: blob.hex() for name, blob in public.items() if name in ("context", "public_key")}).encode())
        meta = KeyMeta(key, version, params.model_dump_json(), hashlib.sha256(public["public_key"]).hexdigest(),
                       time.time())
        _write_atomic(self._meta_path(key), json.dumps(asdict(meta)).encode())
        self._open[key] = (ctx, keys)
        return meta

    def check_absent(self, key: str) -> None:
        """KeyStoreError when `key` exists (and is not destroyed)."""
        if self._meta_path(key).is_file() and not self.meta(key).destroyed:
            raise KeyStoreError(f"key {key!r} already exists")

    def create(self, key: str, params: CkksParams) -> KeyMeta:
        """A new key; its secret key is sealed to disk before this returns."""
        with self._lock:
            self.check_absent(key)
            return self._create_version(key, params, 1)

    def open(self, key: str) -> tuple[Context, KeyPair]:
        """The key's context and key pair, unsealing the secret key inside the enclave on first use."""
        with self._lock:
            if key in self._open:
                return self._open[key]
            meta = self.meta(key)
            if meta.destroyed:
                raise KeyStoreError(f"key {key!r} was destroyed")
            public = json.loads((self.dir / f"{key}.v{meta.version}.public").read_text())
            secret = self.hsm.unseal(self._sealed_path(key, meta.version).read_bytes(), self.aad(key, meta.version))
            cc = fhe.DeserializeCryptoContextString(bytes.fromhex(public["context"]), fhe.BINARY)
            for feature in (fhe.PKESchemeFeature.PKE, fhe.PKESchemeFeature.KEYSWITCH,
                            fhe.PKESchemeFeature.LEVELEDSHE):
                cc.Enable(feature)
            pk = fhe.DeserializePublicKeyString(bytes.fromhex(public["public_key"]), fhe.BINARY)
            sk = fhe.DeserializePrivateKeyString(secret, fhe.BINARY)
            cc.EvalMultKeyGen(sk)
            opened = (Context(cc, CkksParams.model_validate_json(meta.params_json)), KeyPair(pk, sk))
            self._open[key] = opened
            return opened

    def fresh_zeros(self, key: str) -> Callable[[], fhe.Ciphertext]:
        """Fresh encryptions of 0 under the key's public key, each handed out once (see crypto.encrypt_matrix);
        made ahead while the enclave serves no call."""
        with self._lock:
            ctx, pair = self.open(key)
            pool = self._zeros.get(key)
            if pool is None:
                pool = Precomputed(lambda: encrypt_zero(ctx, pair.public), ZEROS_AHEAD, f"zeros-{key}")
                self._zeros[key] = pool
            return pool.take

    def _drop_zeros(self, key: str) -> None:
        pool = self._zeros.pop(key, None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        """Stop making encryptions ahead and drop those made."""
        with self._lock:
            for key in list(self._zeros):
                self._drop_zeros(key)

    def slots(self, key: str) -> int:
        """CKKS slots of the key's ring (ring dimension / 2); KeyStoreError when there is no such key."""
        return CkksParams.model_validate_json(self.meta(key).params_json).ring_dim // 2

    def public_material(self, key: str, rotations: list[int]) -> dict[str, bytes]:
        """Context, public key, relinearisation keys, rotation keys for exactly `rotations` and the conjugation
        key. The rotation list is checked (zones.tee.access.check_rotations: Invalid) before any key is made."""
        rotations = check_rotations(rotations, self.slots(key))
        with self._lock:
            ctx, keys = self.open(key)
            try:
                ctx.cc.ClearEvalAutomorphismKeys()  # only what this caller asked for goes out
            except RuntimeError:
                pass
            automorphism_keygen(ctx.cc, keys.secret, rotations)
            return serialize_public(ctx.cc, keys.public)

    def rotate(self, key: str) -> KeyMeta:
        """Replace the key by a new version with the same parameters; the old sealed key is deleted."""
        with self._lock:
            old = self.meta(key)
            if old.destroyed:
                raise KeyStoreError(f"key {key!r} was destroyed")
            self._open.pop(key, None)
            self._drop_zeros(key)
            meta = self._create_version(key, CkksParams.model_validate_json(old.params_json), old.version + 1)
            self._sealed_path(key, old.version).unlink(missing_ok=True)
            (self.dir / f"{key}.v{old.version}.public").unlink(missing_ok=True)
            return meta

    def destroy(self, key: str) -> KeyMeta:
        """Delete the sealed secret key; the metadata stays, marked destroyed."""
        with self._lock:
            meta = self.meta(key)
            self._open.pop(key, None)
            self._drop_zeros(key)
            self._sealed_path(key, meta.version).unlink(missing_ok=True)
            gone = KeyMeta(**{**asdict(meta), "destroyed": True})
            _write_atomic(self._meta_path(key), json.dumps(asdict(gone)).encode())
            return gone
