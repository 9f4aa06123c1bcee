"""The HSM: a PKCS#11 token (SoftHSM2 here) holding the key-encryption key and the platform signing key.

Both keys are generated inside the token and never leave it: the KEK is AES-256,
sensitive and non-extractable, and sealing/unsealing run in the token (AES-GCM with
associated data); the platform key is Ed25519 and signs attestation quotes in the
token. A real HSM is a change of module path, token label and PIN source.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_named_curve_parameters

KEK_LABEL = "hsi-kek"
PLATFORM_LABEL = "hsi-platform"
ED25519_OID = "1.3.101.112"
NONCE_BYTES = 12


class HsmError(RuntimeError):
    """The token is missing, locked or refused an operation; the message says which."""


class SealError(ValueError):
    """A sealed blob that does not open: corrupted, or sealed for another key id or enclave build."""


@dataclass(frozen=True)
class HsmConfig:
    """Where the token is: PKCS#11 module, token label, user PIN."""

    module: str
    token_label: str
    pin: str


def init_softhsm_token(token_dir: Path, label: str, pin: str, so_pin: str) -> Path:
    """Create a SoftHSM2 configuration whose tokens live in `token_dir` and initialise a token there.

    Returns the configuration file to put in SOFTHSM2_CONF. Idempotent: an existing token is kept.
    """
    token_dir.mkdir(parents=True, exist_ok=True)
    (token_dir / "tokens").mkdir(exist_ok=True)
    conf = token_dir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {token_dir / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    shown = subprocess.run(["softhsm2-util", "--show-slots"], env=env, capture_output=True, text=True, check=False)
    if f"Label:            {label}" not in shown.stdout:
        done = subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
                               "--so-pin", so_pin], env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HsmError(f"softhsm2-util could not initialise token {label!r}: {done.stderr.strip()}")
    return conf


class Hsm:
    """An open session on the token, with the KEK and the platform key (created on first use)."""

    def __init__(self, config: HsmConfig) -> None:
        try:
            lib = pkcs11.lib(config.module)
            token = lib.get_token(token_label=config.token_label)
            try:
                self._session = token.open(user_pin=config.pin, rw=True)
            except pkcs11.UserAlreadyLoggedIn:  # PKCS#11 login is per process: share it
                self._session = token.open(rw=True)
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as e:
            raise HsmError(f"cannot open PKCS#11 token {config.token_label!r} with module {config.module}: "
                           f"{type(e).__name__} {e}") from None
        self._lock = threading.Lock()  # a PKCS#11 session is not for concurrent use
        # python-pkcs11's key classes gain encrypt/sign through mixins its type hints do not show
        self._kek: Any = self._find_or_create_kek()
        keys: tuple[Any, Any] = self._find_or_create_platform_key()
        self._sign_key, self._verify_key = keys

    def close(self) -> None:
        """Close the token session."""
        self._session.close()

    def _find_or_create_kek(self) -> Any:
        try:
            return self._session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label=KEK_LABEL)
        except pkcs11.NoSuchKey:
            pass
        return self._session.generate_key(
            KeyType.AES, 256, label=KEK_LABEL, store=True,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True, Attribute.TOKEN: True})

    def _find_or_create_platform_key(self) -> tuple[Any, Any]:
        try:
            return (self._session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS, label=PLATFORM_LABEL),
                    self._session.get_key(ObjectClass.PUBLIC_KEY, KeyType.EC_EDWARDS, label=PLATFORM_LABEL))
        except pkcs11.NoSuchKey:
            pass
        params = self._session.create_domain_parameters(
            KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)}, local=True)
        public, private = params.generate_keypair(
            label=PLATFORM_LABEL, store=True, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
            private_template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True})
        return private, public

    @property
    def kek_extractable(self) -> bool:
        """Whether the token would let the KEK out (never, by construction)."""
        return bool(self._kek[Attribute.EXTRACTABLE])

    def platform_public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key of the platform."""
        point = bytes(self._verify_key[Attribute.EC_POINT])
        return point[-32:]  # DER OCTET STRING wrapping the 32-byte point

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature by the platform key, computed in the token."""
        with self._lock:
            return bytes(self._sign_key.sign(data, mechanism=Mechanism.EDDSA))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """nonce || AES-256-GCM(ciphertext || tag) under the KEK, computed in the token."""
        nonce = os.urandom(NONCE_BYTES)
        with self._lock:
            body = self._kek.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad, 128))
        return nonce + bytes(body)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of a sealed blob; SealError when the tag does not verify for this AAD."""
        if len(blob) < NONCE_BYTES + 16:
            raise SealError(f"sealed blob of {len(blob)} bytes is too short")
        nonce, body = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        try:
            with self._lock:
                return bytes(self._kek.decrypt(body, mechanism=Mechanism.AES_GCM,
                                               mechanism_param=GCMParams(nonce, aad, 128)))
        except pkcs11.PKCS11Error as e:
            raise SealError(f"AES-GCM authentication failed ({type(e).__name__}): the blob was altered, or it was "
                            "sealed for another key id or enclave measurement") from None


def init_dev_token(directory: Path, label: str, module: str) -> tuple[Path, Path, Path]:
    """A SoftHSM2 token for a dev deployment in `directory`, with a random PIN in a 0600 file and the platform
    public key (which clients pin) in `platform.pub`; (SOFTHSM2_CONF, PIN file, platform key file). Idempotent."""
    directory.mkdir(parents=True, exist_ok=True)
    pin_file = directory / "user.pin"
    if not pin_file.exists():
        pin_file.write_text(secrets.token_hex(16))
        pin_file.chmod(0o600)
    pin = pin_file.read_text().strip()
    conf = init_softhsm_token(directory, label, pin, secrets.token_hex(16))
    os.environ["SOFTHSM2_CONF"] = str(conf)
    hsm = Hsm(HsmConfig(module, label, pin))
    try:
        (directory / "platform.pub").write_text(hsm.platform_public_key().hex() + "\n")
    finally:
        hsm.close()
    return conf, pin_file, directory / "platform.pub"
