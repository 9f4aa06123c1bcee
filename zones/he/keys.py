"""The HE zone's public key material: parameters checked, the key holder's bundle installed or fetched, its context."""

from __future__ import annotations

import json
import threading

import grpc
import openfhe as fhe

from hsi.policy import HeZone, Policy, TeeZone
from hsi.transport.material import MaterialError, unbundle
from hsi.transport.status import ZoneError
from zones.common.ckks.material import deserialize_public
from zones.common.ckks.params import HeParamsError, make_context


class KeyMaterial:
    """The public and evaluation keys of one HE zone, never a secret key. OpenFHE keeps evaluation keys in
    process-global maps: one key per zone process."""

    def __init__(self, policy: Policy, zone: str, party: str) -> None:
        spec = policy.zones[zone]
        assert isinstance(spec, HeZone)
        self.policy, self.zone, self.party, self.spec = policy, zone, party, spec
        try:
            # Validates the parameters (security level) before any key material arrives.
            make_context(spec.ckks)
        except HeParamsError as e:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION, f"zone {zone!r}: {e}") from None
        self._cc: fhe.CryptoContext | None = None
        self.key_tag = ""
        self.zero: fhe.Ciphertext | None = None  # a fresh encryption of 0 (see Ciphertexts.read)
        self._lock = threading.Lock()

    @property
    def installed(self) -> bool:
        """Whether public material has been installed (and not dropped since)."""
        return self._cc is not None

    def requirements(self, rotations: list[int]) -> tuple[str, list[int], str]:
        """(key handle, rotations, CKKS parameters as JSON) the zone needs installed."""
        return self.spec.key, rotations, json.dumps(self.spec.ckks.model_dump())

    def install(self, data: bytes, meta: dict[str, str]) -> str:
        """Install a public-material bundle in place of the previous one; its key tag."""
        try:
            parts = unbundle(data, meta)
            cc, public = deserialize_public(parts)
        except (MaterialError, RuntimeError) as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"public material does not deserialise: {e}") from None
        p = self.spec.ckks
        if cc.GetRingDimension() != p.ring_dim:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"public material is for ring dimension {cc.GetRingDimension()}, the policy says "
                            f"{p.ring_dim}")
        if cc.GetCyclotomicOrder() != 2 * p.ring_dim or cc.GetMultiplicativeDepth() != p.depth:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"public material has depth {cc.GetMultiplicativeDepth()}, the policy says {p.depth}")
        # One key per zone process, so the previous key's material goes before the new arrives (a re-install
        # after a key rotation).
        fhe.ClearEvalMultKeys()
        cc.ClearEvalAutomorphismKeys()
        try:
            fhe.DeserializeEvalMultKeyString(parts["mult_keys"], fhe.BINARY)
            if parts["rotation_keys"]:
                fhe.DeserializeEvalAutomorphismKeyString(parts["rotation_keys"], fhe.BINARY)
        except RuntimeError as e:
            raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"evaluation keys do not deserialise: {e}") from None
        with self._lock:
            self._cc, self.key_tag = cc, public.GetKeyTag()
            self.zero = cc.Encrypt(public, cc.MakeCKKSPackedPlaintext([0.0]))
            return self.key_tag

    def fetch(self, rotations: list[int]) -> tuple[bytes, dict[str, str]] | None:
        """The public-material bundle from the policy's TEE key service, after verifying its attestation; None
        when the policy has no enclave."""
        from hsi.transport.attestation import AttestationError
        from hsi.transport.keyclient import KeyServiceError, fetch_public_material

        if not self.policy.zones_of(TeeZone):
            return None
        try:
            data, meta, _ = fetch_public_material(self.policy, self.policy.principal(self.party, self.zone),
                                                  self.spec.key, rotations)
        except (KeyServiceError, AttestationError) as e:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"zone {self.zone!r} could not get public material for key {self.spec.key!r} from "
                            f"{e}") from None
        return data, meta

    def context(self) -> fhe.CryptoContext:
        """The installed material's context; FAILED_PRECONDITION when there is none."""
        cc = self._cc
        if cc is None:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"zone {self.zone!r} has no public material for key {self.spec.key!r}; the key holder "
                            "must install it first (InstallPublicMaterial)")
        return cc

    def clear(self) -> None:
        """Forget the context (zone shutdown; OpenFHE's global contexts are released by the caller)."""
        with self._lock:
            self._cc = None
