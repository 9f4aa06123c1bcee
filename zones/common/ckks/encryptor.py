"""Encryption at a data owner (plain -> he): with public material from the attested TEE key service only."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import openfhe as fhe

from hsi.ckks.packing import input_packing
from hsi.policy import HeZone, Policy
from hsi.transport.material import MaterialError, unbundle
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from zones.common.ckks.crypto import encrypt_matrix
from zones.common.ckks.material import deserialize_public
from zones.common.ckks.params import Context
from zones.common.ckks.tensor import CipherTensor


class PublicEncryptor:
    """Encrypts tensors for the HE zones of a policy, as `principal`; fetches each key's material once."""

    def __init__(self, policy: Policy, principal: str) -> None:
        self.policy, self.principal = policy, principal
        self._keys: dict[str, tuple[Context, fhe.PublicKey]] = {}
        self._lock = threading.Lock()

    def _material(self, he_zone: str, he: HeZone) -> tuple[Context, fhe.PublicKey]:
        from hsi.transport.attestation import AttestationError
        from hsi.transport.keyclient import KeyServiceError, fetch_public_material

        with self._lock:
            if he.key not in self._keys:
                try:
                    data, meta, _ = fetch_public_material(self.policy, self.principal, he.key, [])
                    cc, public = deserialize_public(unbundle(data, meta))
                except (KeyServiceError, AttestationError, MaterialError, RuntimeError) as e:
                    raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"{self.principal} could not get the public key {he.key!r} for zone "
                                    f"{he_zone!r}: {e}") from None
                self._keys[he.key] = (Context(cc, he.ckks), public)
            return self._keys[he.key]

    def encrypt(self, he_zone: str, values: np.ndarray) -> StoredTensor:
        """A (tokens, features) matrix encrypted under the key of HE zone `he_zone`, in the layout it takes for
        that many tokens."""
        he = self.policy.zones[he_zone]
        assert isinstance(he, HeZone)
        if values.ndim != 2:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"only (tokens, features) matrices are encrypted, got shape {list(values.shape)}")
        ctx, public = self._material(he_zone, he)
        packing = input_packing(he, values.shape[0])
        blocks = encrypt_matrix(ctx, public, packing, values)
        return CipherTensor(blocks, packing, values.shape[0], values.shape[1]).to_stored()
