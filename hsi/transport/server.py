"""The one gRPC server factory: mTLS with client certificates required, allow-list auth, health, reflection."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hsi.policy import Transport
from hsi.transport.auth import AllowListInterceptor, Limits
from hsi.transport.certs import Credentials


@dataclass(frozen=True)
class ServerOptions:
    """Every server knob in one place."""

    # Largest single gRPC message; tensors larger than this travel as chunk streams.
    max_message_bytes: int = 8 << 20
    # Worker threads: streams of several sessions, plus transfers to other zones, run at once. Calls are
    # admitted (or refused) as they open, so a worker is held only by an admitted call.
    max_workers: int = 64
    # Calls open at once on the server; past it a new call gets RESOURCE_EXHAUSTED at once instead of queueing
    # behind a full pool.
    max_concurrent_calls: int = 256
    # Calls one principal may have open at once, and how long a call may wait for its next request message.
    limits: Limits = field(default_factory=Limits)
    # Threads that answer health checks only, whatever holds the other workers.
    health_workers: int = 4


KEEPALIVE_MS = 20_000  # pings detect dead peers on long calls (an MPC stage may run for minutes)
RECONNECT_MS = 1000  # how often a channel to a peer that went away tries again


def server_options_of(transport: Transport) -> ServerOptions:
    """A policy's transport settings as server options."""
    return ServerOptions(max_message_bytes=transport.max_message_bytes,
                         limits=Limits(transport.calls_per_principal, transport.stream_idle_s))


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel and server options shared by servers and clients."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # A zone that restarts is back within a second for its peers: gRPC's default backoff grows to 120 s,
        # and a call on a channel still backing off fails at once with the old "connection refused".
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_MS),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MS),
    ]


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Server options: the channel's, and acceptance of the clients' keepalive pings during long calls.

    Without these a server answers a client's pings on a call that sends no data for minutes with
    GOAWAY "too_many_pings", which kills the call.
    """
    return channel_options(max_message_bytes) + [
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_MS // 2),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def build_server(
    creds: Credentials,
    bind: str,
    allow: Mapping[str, frozenset[str]],
    register: Callable[[grpc.Server], list[str]],
    options: ServerOptions = ServerOptions(),
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started-ready (not started) server on `bind` with mTLS and auth; returns (server, port, health).

    `register` adds the servicers and returns their full service names (for health and reflection).
    """
    health_pool = futures.ThreadPoolExecutor(max_workers=options.health_workers, thread_name_prefix="hsi-health")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.max_workers, thread_name_prefix="hsi-rpc"),
        interceptors=[AllowListInterceptor(allow, limits=options.limits, health_pool=health_pool)],
        options=server_options(options.max_message_bytes),
        maximum_concurrent_rpcs=options.max_concurrent_calls,
    )
    names = register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in names + [""]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(names + [health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    tls = grpc.ssl_server_credentials([(creds.key, creds.cert)], root_certificates=creds.ca,
                                      require_client_auth=True)
    port = server.add_secure_port(bind, tls)
    if port == 0:
        raise OSError(f"cannot bind {bind}")
    return server, port, health_servicer


@contextlib.contextmanager
def run_server(
    creds: Credentials,
    bind: str,
    allow: Mapping[str, frozenset[str]],
    register: Callable[[grpc.Server], list[str]],
    options: ServerOptions = ServerOptions(),
) -> Iterator[int]:
    """Run a server for the duration of a `with` block; yields the bound port."""
    server, port, _ = build_server(creds, bind, allow, register, options)
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=1).wait()


def secure_channel(creds: Credentials, target: str, max_message_bytes: int = 8 << 20) -> grpc.Channel:
    """An mTLS channel to `target` presenting `creds`."""
    tls = grpc.ssl_channel_credentials(root_certificates=creds.ca, private_key=creds.key, certificate_chain=creds.cert)
    return grpc.secure_channel(target, tls, options=channel_options(max_message_bytes))
