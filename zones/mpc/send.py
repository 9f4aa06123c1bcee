"""The sending side of the conversions out of an MPC zone: every share to a plain zone, or re-encrypted for an HE
zone through the enclave."""

from __future__ import annotations

import time

import grpc

from hsi.conversions import Outbox, conversion_enclave, register_sender
from hsi.ir import ZoneKind
from hsi.masking import BOUNDED, PIECES
from hsi.policy import HeZone
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import zone_pb2
from zones.common.outbox import send_as_is

register_sender(ZoneKind.MPC, ZoneKind.PLAIN)(send_as_is)


@register_sender(ZoneKind.MPC, ZoneKind.HE)
def reencrypt(out: Outbox, move: zone_pb2.TransferRequest, t: StoredTensor) -> zone_pb2.TransferReply:
    """mpc -> he: the HE host's party sends its bounded share s (the mask); the enclave's party has the enclave
    encrypt its share y - s for the HE zone, which adds the two. Bytes per link."""
    start = time.perf_counter()
    sid, name, to_zone = move.session, move.name, move.to_zone
    he = out.policy.zones[to_zone]
    assert isinstance(he, HeZone)
    if t.meta.get(BOUNDED) != "1":
        raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                        f"the share of {name!r} was not re-shared with a bounded mask for an HE zone; the plan "
                        "of this zone does not send it there")
    tee, tee_party = conversion_enclave(out.policy, to_zone, out.zone)
    links: dict[str, int] = {}
    if out.party == he.party:
        mask = StoredTensor(t.encoding, t.dtype, t.shape, t.data, t.meta | {PIECES: "2"})
        out.send(sid, name, mask, to_zone, he.party)
        links[f"{out.principal}->{out.policy.principal(he.party, to_zone)}"] = len(t.data)
    elif out.party == tee_party:
        reply = out.call_enclave(tee, "EncryptShare", sid, name, t, t.meta | {"key": he.key, "to_zone": to_zone})
        enclave = out.policy.principal(tee_party, tee)
        links[f"{out.principal}->{enclave}"] = len(t.data)
        links[f"{enclave}->{reply.to_principal}"] = reply.bytes
    # any other party's share is zero after the re-sharing: it sends nothing
    return zone_pb2.TransferReply(bytes=sum(links.values()), seconds=time.perf_counter() - start,
                                  bytes_by_link=links)
