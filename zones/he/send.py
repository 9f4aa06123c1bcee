"""The sending side of the conversions out of an HE zone: masked into MPC shares through the enclave, or as
ciphertexts to an enclave that computes."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np

from hsi.conversions import Outbox, conversion_enclave, register_sender
from hsi.engine import MaskingEngine
from hsi.ir import ZoneKind
from hsi.masking import MASK_SEED, PRESCALE, bounded_share, fresh_mask_seed, hide, ring_mask
from hsi.policy import HeZone, MpcZone
from hsi.transport.tensor import StoredTensor
from protos import zone_pb2
from zones.common.outbox import send_as_is

_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hsi-send")  # pushes that overlap the enclave's call
register_sender(ZoneKind.HE, ZoneKind.TEE)(send_as_is)


@register_sender(ZoneKind.HE, ZoneKind.MPC)
def mask_into_shares(out: Outbox, move: zone_pb2.TransferRequest, t: StoredTensor) -> zone_pb2.TransferReply:
    """he -> mpc: mask with a bounded r; the HE host's party gets r + u, the enclave decrypts ct(x - r) into its
    party's share x - r - u (u ring-uniform, from a seed sent to the enclave alone); any other party gets a zero
    share. Bytes per link."""
    start = time.perf_counter()
    sid, name, to_zone = move.session, move.name, move.to_zone
    he, mpc = out.policy.zones[out.zone], out.policy.zones[to_zone]
    assert isinstance(he, HeZone) and isinstance(mpc, MpcZone) and isinstance(out.engine, MaskingEngine)
    tee, tee_party = conversion_enclave(out.policy, out.zone, to_zone)
    planned = out.plan.conversion(name, out.zone, to_zone)
    k = planned.prescale_bits if planned else 0
    r, masked = out.engine.mask(name, t, he.mask_bits)
    # The host's party holds r + u and the enclave's x - r - u: u, ring-uniform from a fresh seed only the enclave
    # is told, leaves no bounded value outside the enclave (x - r stays inside it).
    seed = fresh_mask_seed()
    u = ring_mask(seed, r.shape)
    names, bits = list(mpc.parties), mpc.fixed_point_bits
    links: dict[str, int] = {}
    sends: list[Future[None]] = []  # the other parties' shares go out while the enclave decrypts
    for i, party in enumerate(names):
        if party == tee_party:
            continue
        share = bounded_share(r if party == he.party else np.zeros_like(r), i, len(names), bits, k)
        if party == he.party:
            share = hide(share, u, +1)
        sends.append(_POOL.submit(out.send, sid, name, share, to_zone, party))
        links[f"{out.principal}->{out.policy.principal(party, to_zone)}"] = len(share.data)
    meta = {"key": he.key, "to_zone": to_zone, "to_party": tee_party, "share_index": str(names.index(tee_party)),
            "share_count": str(len(names)), "precision": str(bits), PRESCALE: str(k), MASK_SEED: seed.hex()}
    try:
        reply = out.call_enclave(tee, "DecryptToShare", sid, name, masked, masked.meta | meta)
    finally:
        wait(sends)  # an enclave refusal is the error to report; a failed push is reported after
    for f in sends:
        f.result()
    enclave = out.policy.principal(tee_party, tee)
    links[f"{out.principal}->{enclave}"] = len(masked.data)
    links[f"{enclave}->{reply.to_principal}"] = reply.bytes
    return zone_pb2.TransferReply(bytes=sum(links.values()), seconds=time.perf_counter() - start,
                                  bytes_by_link=links)
