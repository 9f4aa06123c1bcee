"""Tensors the enclave keeps outside its boundary (in the zone host's tensor store) are sealed: AES-GCM under a
key that exists only in enclave memory, bound to the session and tensor name, so the host holds ciphertext only
and cannot swap one tensor for another."""

from __future__ import annotations

import os

import grpc
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsi.transport.codec import CodecError, decode_tensor, encode_tensor
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb

NONCE = "nonce"


def _aad(session: str, name: str, dtype: str, shape: tuple[int, ...]) -> bytes:
    return "\0".join(["hsi-sealed-v1", session, name, dtype, ",".join(map(str, shape))]).encode()


class TensorSeal:
    """Seals and opens tensors under a fresh per-process enclave key (sealed tensors die with the process,
    like the sessions they belong to)."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def seal(self, session: str, name: str, tensor: torch.Tensor) -> StoredTensor:
        """`tensor` sealed for this enclave, bound to (session, name)."""
        dtype, shape, data = encode_tensor(tensor)
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, data, _aad(session, name, dtype, tuple(shape)))
        return StoredTensor(pb.SEALED, dtype, tuple(shape), sealed, {NONCE: nonce.hex()})

    def open(self, session: str, name: str, t: StoredTensor) -> torch.Tensor:
        """The tensor sealed as (session, name); ZoneError when it was not sealed by this enclave for them."""
        if t.encoding != pb.SEALED:
            raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION, f"tensor {name!r} is {t.encoding_name}, not sealed")
        try:
            nonce = bytes.fromhex(t.meta[NONCE])
            data = self._aead.decrypt(nonce, t.data, _aad(session, name, t.dtype, t.shape))
            return decode_tensor(t.dtype, list(t.shape), data)
        except (KeyError, ValueError, InvalidTag, CodecError):
            raise ZoneError(grpc.StatusCode.DATA_LOSS,
                            f"sealed tensor {name!r} of session {session!r} does not open: not sealed by this enclave "
                            "process for this session and name, or altered") from None
