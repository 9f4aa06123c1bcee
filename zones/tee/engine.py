"""The tee zone's stage engine: runs ops inside the (simulated) enclave on plaintext only it can see.

Tensors enter the enclave as CKKS ciphertexts (it decrypts them with the keys it holds, under the policy's
grants), as plaintext from a party the plan lets send it, or as MPC shares it reconstructs. Everything it keeps
between calls lives in the zone host's store sealed under an enclave-only key. Results leave encrypted for an HE
zone, shared to an MPC zone, or in plaintext only to the party the plan releases them to.
"""

from __future__ import annotations

import grpc
import torch

from hsi.ckks.packing import input_packing
from hsi.engine import RunContext
from hsi.ir import ZoneKind
from hsi.kinds import register_engine
from hsi.plan import CLIENT
from hsi.policy import HeZone, Policy
from hsi.transport.codec import encode_tensor
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from zones.common.torch_engine import TorchEngine
from zones.tee.access import Denied
from zones.tee.convert import ConversionError, decrypt_values, encrypt_values
from zones.tee.enclave import Enclave
from zones.tee.keystore import KeyStoreError
from zones.tee.sealing import TensorSeal

DECRYPT = "decrypt_in_enclave"  # the sender of a ciphertext lets the enclave decrypt it to compute on
ENCRYPT = "encrypt_result"      # the enclave encrypts a result of its own for an HE zone


@register_engine(ZoneKind.TEE)
class TeeEngine(TorchEngine):
    """The plain executor inside the enclave boundary: inputs decrypted or unsealed, outputs sealed."""

    def __init__(self, policy: Policy, zone: str, party: str, enclave: Enclave | None = None) -> None:
        super().__init__(policy, zone, party)
        self.enclave = enclave if enclave is not None else Enclave(policy, zone)
        self._owns_enclave = enclave is None
        self.principal = policy.principal(party, zone)
        self._seal = TensorSeal()

    def _authorize(self, principal: str, operation: str, key: str, session: str, recipient: str = "") -> None:
        try:
            self.enclave.access.authorize(principal, operation, key, session, recipient)
        except Denied as d:
            raise ZoneError(d.code, d.reason) from None

    def admit(self, session: str, name: str, t: StoredTensor, principal: str) -> StoredTensor:
        """A tensor arriving at the enclave as it is kept: decrypted (if the sender's grant allows) and sealed."""
        if t.encoding == pb.CKKS:
            zone = self.policy.zones.get(principal.partition("/")[2])
            if not isinstance(zone, HeZone):
                raise ZoneError(grpc.StatusCode.PERMISSION_DENIED,
                                f"ciphertext {name!r} comes from {principal!r}, which is no HE zone of the policy")
            self._authorize(principal, DECRYPT, zone.key, session)
            try:
                values = decrypt_values(self.enclave.keys, zone.key, t)
            except (ConversionError, KeyStoreError) as e:
                raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"ciphertext {name!r} does not decrypt: {e}") from None
            return self._seal.seal(session, name, torch.from_numpy(values).float())
        if t.encoding == pb.PLAIN:
            return self._seal.seal(session, name, self._plain(name, t))
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                        f"the enclave takes ciphertexts, plaintext or shares, not a {t.encoding_name} tensor "
                        f"({name!r}); sealed tensors open only in the enclave process that sealed them")

    def _plain(self, name: str, t: StoredTensor) -> torch.Tensor:
        return super()._decode(name, t, RunContext("", 0))

    def _decode(self, name: str, t: StoredTensor, ctx: RunContext) -> torch.Tensor:
        return self._seal.open(ctx.session, name, t)

    def _encode(self, name: str, t: torch.Tensor, ctx: RunContext) -> StoredTensor:
        return self._seal.seal(ctx.session, name, t)

    def export(self, session: str, name: str, t: StoredTensor, to_zone: str) -> StoredTensor:
        """A kept tensor as it leaves for `to_zone` (CLIENT: the runtime): encrypted under an HE zone's key, in
        plaintext otherwise (an MPC zone's parties get it secret-shared by the zone service)."""
        value = self._seal.open(session, name, t)
        target = self.policy.zones.get(to_zone) if to_zone != CLIENT else None
        if isinstance(target, HeZone):
            if value.dim() != 2:
                raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"only (tokens, features) tensors are encrypted for an HE zone; {name!r} has shape "
                                f"{list(value.shape)}")
            self._authorize(self.principal, ENCRYPT, target.key, session, self.policy.principal(target.party, to_zone))
            try:
                return encrypt_values(self.enclave.keys, target.key, value.double().numpy(),
                                      input_packing(target, value.shape[0]))
            except (ConversionError, KeyStoreError) as e:
                raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION, f"{name!r} cannot be encrypted: {e}") from None
        dtype, shape, data = encode_tensor(value)
        return StoredTensor(pb.PLAIN, dtype, tuple(shape), data)

    def close(self) -> None:
        """Close the enclave when this engine opened it."""
        if self._owns_enclave:
            self.enclave.close()
