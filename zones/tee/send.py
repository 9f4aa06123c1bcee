"""The sending side of the conversions out of an enclave: encrypted under an HE zone's key, or released in
plaintext to the party the plan names."""

from __future__ import annotations

from hsi.conversions import Outbox, register_sender
from hsi.engine import EnclaveEngine
from hsi.ir import ZoneKind
from hsi.transport.tensor import StoredTensor
from protos import zone_pb2
from zones.common.outbox import send_as_is


def _export_then_send(out: Outbox, move: zone_pb2.TransferRequest, t: StoredTensor) -> zone_pb2.TransferReply:
    assert isinstance(out.engine, EnclaveEngine)
    return send_as_is(out, move, out.engine.export(move.session, move.name, t, move.to_zone))


register_sender(ZoneKind.TEE, ZoneKind.HE)(_export_then_send)
register_sender(ZoneKind.TEE, ZoneKind.PLAIN)(_export_then_send)
