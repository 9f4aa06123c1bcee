"""Run one zone process: the Zone service of (policy, zone, party) until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from typing import TYPE_CHECKING

import grpc

from hsi import kinds
from hsi.allow import KEY_SERVICE, ZONE_SERVICE, zone_allow_table
from hsi.engine import ZoneEngine
from hsi.policy import Policy
from hsi.transport.certs import Credentials, certs_dir, load_credentials
from hsi.transport.server import build_server, server_options_of
from protos import zone_pb2_grpc
from zones.common.service import ZoneServicer

if TYPE_CHECKING:
    from zones.tee.enclave import Enclave

log = logging.getLogger("hsi.zone")
_POLL_S = 0.2  # how often the serving loop looks for a signal
_STOP_S = 10.0  # how long a stopping zone waits for its RPCs to end, grace period included


def serve_zone(policy: Policy, zone: str, party: str, ready: threading.Event | None = None,
               stop: threading.Event | None = None, dealer: bool = False) -> bool:
    """Serve the zone (or, with `dealer`, an MPC zone's dealer) until `stop` is set or the process is signalled.

    Returns whether every RPC had ended when the server stopped.
    """
    if zone not in policy.zones:
        raise SystemExit(f"policy {policy.name!r} has no zone {zone!r}")
    endpoints = policy.zone_endpoints(zone)
    if dealer:
        if not policy.has_dealer(zone):
            raise SystemExit(f"zone {zone!r} is not an MPC zone and has no dealer")
        host = policy.dealer_enclave(zone)
        if host is not None:
            raise SystemExit(f"the dealer of zone {zone!r} runs inside enclave zone {host!r}: the process of "
                             f"'hsi zone serve --zone {host}' serves it")
        dealer_party, address = policy.dealer_endpoint(zone)
        if party != dealer_party:
            raise SystemExit(f"the dealer of zone {zone!r} runs at party {dealer_party!r}, not {party!r}")
        endpoints = {party: address}
    elif party not in endpoints:
        raise SystemExit(f"zone {zone!r} runs at {sorted(endpoints)}, not at party {party!r}")
    creds = load_credentials(certs_dir(policy), policy.principal(party, zone))
    enclave = None
    if dealer:
        served = [_dealer_server(policy, zone, party, creds)]
    else:
        server, servicer, enclave = _zone_server(policy, zone, party, creds, endpoints[party])
        # `dealer: enclave`: this enclave's process also serves those MPC zones' dealers, each on its own port
        served = [(server, servicer)] + [_dealer_server(policy, mpc, party, creds)
                                         for mpc in policy.hosted_dealers(zone)]
    stop = stop or threading.Event()
    signalled: list[int] = []
    if threading.current_thread() is threading.main_thread():
        # The handler only appends: Event.set() takes the event's lock, which this thread may hold when a second
        # signal lands (start.sh's trap re-sends TERM right after a group kill), and that deadlocks the process.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: signalled.append(signum))
    for srv, _ in served:
        srv.start()
    log.info("zone %s (%s%s) of policy %s serving at %s", zone, party, ", dealer" if dealer else "", policy.name,
             endpoints[party])
    if ready:
        ready.set()
    while not (signalled or stop.wait(_POLL_S)):
        pass
    stopping = [srv.stop(grace=2) for srv, _ in served]
    clean = all(event.wait(timeout=_STOP_S) for event in stopping)
    if not clean:
        log.warning("zone %s: RPCs still running %.0f s after stop; closing without them", zone, _STOP_S)
    for _, servicer in served:
        servicer.close()
    if enclave is not None:
        enclave.close()
    return clean


def _zone_server(policy: Policy, zone: str, party: str, creds: Credentials,
                 address: str) -> tuple[grpc.Server, ZoneServicer, Enclave | None]:
    """The server of a zone process: its Zone service over its kind's engine, and in an enclave the key service
    over the same enclave (returned too, to be closed last)."""
    engine: ZoneEngine | None = None
    enclave: Enclave | None = None
    if kinds.spec(policy.zones[zone].kind).in_enclave:
        from hsi.allow import key_service_allow_table
        from protos import keys_pb2_grpc
        from zones.tee.delivery import Delivery
        from zones.tee.enclave import Enclave
        from zones.tee.engine import TeeEngine
        from zones.tee.service import KeyServiceServicer

        enclave = Enclave(policy, zone)  # one enclave: its key service and its stage engine
        engine = TeeEngine(policy, zone, party, enclave)
    servicer = ZoneServicer(policy, zone, party, creds, engine)

    allow = zone_allow_table(policy, servicer.plan, zone)
    if enclave is not None:
        allow |= key_service_allow_table()

    def register(server: grpc.Server) -> list[str]:
        zone_pb2_grpc.add_ZoneServicer_to_server(servicer, server)
        if enclave is None:
            return [ZONE_SERVICE]
        delivery = Delivery(policy, servicer.deliver, servicer.record_incoming, policy.transport.max_tensor_bytes)
        keys_pb2_grpc.add_KeyServiceServicer_to_server(
            KeyServiceServicer(enclave, policy.transport.chunk_bytes, delivery), server)
        return [ZONE_SERVICE, KEY_SERVICE]

    server, _, _ = build_server(creds, address, allow, register, server_options_of(policy.transport))
    return server, servicer, enclave


def _dealer_server(policy: Policy, mpc: str, party: str, creds: Credentials) -> tuple[grpc.Server, ZoneServicer]:
    """The server of MPC zone `mpc`'s dealer: a process of its own at the dealer's party, or, with `dealer:
    enclave`, inside the enclave's process, whose memory the triples then never leave."""
    from zones.mpc.engine import MpcDealer

    servicer = ZoneServicer(policy, mpc, party, creds, MpcDealer(policy, mpc, party))

    def register(server: grpc.Server) -> list[str]:
        zone_pb2_grpc.add_ZoneServicer_to_server(servicer, server)
        return [ZONE_SERVICE]

    _, address = policy.dealer_endpoint(mpc)
    allow = zone_allow_table(policy, servicer.plan, mpc)
    server, _, _ = build_server(creds, address, allow, register, server_options_of(policy.transport))
    if policy.dealer_enclave(mpc) is not None:
        log.info("dealer of MPC zone %s served in this enclave at %s", mpc, address)
    return server, servicer
