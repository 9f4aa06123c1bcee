"""The sending side of the conversions out of an MPC zone: every share to a plain zone, or every share to the
enclave, which encrypts their sum for an HE zone."""

from __future__ import annotations

import time

import grpc

from hsi.conversions import Outbox, conversion_enclave, register_sender
from hsi.ir import ZoneKind
from hsi.masking import PIECES, TO_HE, bounded_share, hide, uniform_mask
from hsi.policy import HeZone
from hsi.transport.shares import ring_of, share_index
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import zone_pb2
from zones.common.outbox import send_as_is

register_sender(ZoneKind.MPC, ZoneKind.PLAIN)(send_as_is)


@register_sender(ZoneKind.MPC, ZoneKind.HE)
def reencrypt(out: Outbox, move: zone_pb2.TransferRequest, t: StoredTensor) -> zone_pb2.TransferReply:
    """mpc -> he: every party sends its ring share to the enclave, the HE host's party less a bounded mask s that
    it sends the HE zone; the enclave encrypts the sum y - s (formed only inside it) for the HE zone, which adds s.
    Bytes per link."""
    start = time.perf_counter()
    sid, name, to_zone = move.session, move.name, move.to_zone
    he = out.policy.zones[to_zone]
    assert isinstance(he, HeZone)
    if t.meta.get(TO_HE) != "1":
        raise ZoneError(grpc.StatusCode.FAILED_PRECONDITION,
                        f"the share of {name!r} is no output the plan of this zone sends to an HE zone")
    tee, tee_party = conversion_enclave(out.policy, to_zone, out.zone)
    enclave = out.policy.principal(tee_party, tee)
    links: dict[str, int] = {}
    share = t
    if out.party == he.party:
        index, count, precision = share_index(name, t)
        mask = bounded_share(uniform_mask(t.shape, he.reshare_mask_bits), index, count, precision)
        out.send(sid, name, StoredTensor(mask.encoding, mask.dtype, mask.shape, mask.data, mask.meta | {PIECES: "2"}),
                 to_zone, he.party)
        links[f"{out.principal}->{out.policy.principal(he.party, to_zone)}"] = len(mask.data)
        share = hide(t, ring_of(mask), -1)  # y_host - s: still ring-uniform
    reply = out.call_enclave(tee, "EncryptShare", sid, name, share, share.meta | {"key": he.key, "to_zone": to_zone})
    links[f"{out.principal}->{enclave}"] = len(share.data)
    if reply.bytes:  # this party's share was the last: the enclave encrypted and pushed
        links[f"{enclave}->{reply.to_principal}"] = reply.bytes
    return zone_pb2.TransferReply(bytes=sum(links.values()), seconds=time.perf_counter() - start,
                                  bytes_by_link=links)
