"""The sending side of the conversions out of a plain zone: encrypted for HE, secret-shared for MPC, as it is
(after attesting a receiving enclave) otherwise."""

from __future__ import annotations

import time

import grpc

from hsi.conversions import Outbox, register_sender
from hsi.ir import ZoneKind
from hsi.policy import HeZone, MpcZone
from hsi.transport.codec import CodecError, decode_tensor
from hsi.transport.shares import split
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import zone_pb2
from zones.common.outbox import send_as_is

P, H, M, T = ZoneKind.PLAIN, ZoneKind.HE, ZoneKind.MPC, ZoneKind.TEE
register_sender(P, P)(send_as_is)


@register_sender(P, T)
def to_enclave(out: Outbox, move: zone_pb2.TransferRequest, t: StoredTensor) -> zone_pb2.TransferReply:
    """plain -> tee: plaintext only to an enclave whose quote matches the policy's pins."""
    out.attest(move.to_zone)
    return send_as_is(out, move, t)


@register_sender(P, H)
def encrypt(out: Outbox, move: zone_pb2.TransferRequest, t: StoredTensor) -> zone_pb2.TransferReply:
    """plain -> he: encrypt under the attested public key of the HE zone's key; send the ciphertexts."""
    start = time.perf_counter()
    he = out.policy.zones[move.to_zone]
    assert isinstance(he, HeZone)
    try:
        values = decode_tensor(t.dtype, list(t.shape), t.data).double().numpy()
    except CodecError as e:
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {move.name!r} cannot be encrypted: {e}") from None
    ct = out.encryptor().encrypt(move.to_zone, values)
    out.send(move.session, move.name, ct, move.to_zone, he.party)
    return zone_pb2.TransferReply(bytes=len(ct.data), seconds=time.perf_counter() - start)


@register_sender(P, M)
def share(out: Outbox, move: zone_pb2.TransferRequest, t: StoredTensor) -> zone_pb2.TransferReply:
    """plain -> mpc: secret-share the tensor to the parties of the MPC zone, share i to party i."""
    start = time.perf_counter()
    if move.to_party:
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT,
                        "a plaintext tensor goes to an MPC zone as one share per party; leave to_party empty")
    mpc = out.policy.zones[move.to_zone]
    assert isinstance(mpc, MpcZone)
    try:
        shares = split(decode_tensor(t.dtype, list(t.shape), t.data), len(mpc.parties), mpc.fixed_point_bits)
    except (CodecError, ValueError) as e:
        raise ZoneError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {move.name!r} cannot be shared: {e}") from None
    for party, s in zip(mpc.parties, shares, strict=True):
        out.send(move.session, move.name, s, move.to_zone, party)
    return zone_pb2.TransferReply(bytes=sum(len(s.data) for s in shares), seconds=time.perf_counter() - start)
