"""Forming a session's MPC mesh (`links`): every rank connects to every other over mutual TLS, each side checking
that the peer's certificate, issued by the deployment's CA, names the principal the policy gives that rank,
before any protocol byte; a connection that fails the check is closed and the wait goes on until the deadline.
Every rank listens on a port of its own. Rank 0 announces its port to the zone's rendezvous hub (`hub`), where
the other ranks ask for it; each tells rank 0 its own port in its hello, and rank 0 returns everyone the table of
ranks, each at the address its link came from.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from zones.mpc.hub import Hub
from zones.mpc.links import (
    LinkError,
    Mesh,
    MeshSpec,
    clear_openssl_errors,
    contexts,
    peer_principal,
    recv_small,
    send_frame,
)

Announce = Callable[[int], None]  # rank 0 tells its zone's hub the port its worker listens on


def _hello(spec: MeshSpec, port: int) -> bytes:
    return json.dumps({"session": spec.session, "rank": spec.rank, "port": port}).encode()


class _Acceptor:
    """Accepts the incoming links of one rank, each checked against the principal of the rank it claims."""

    def __init__(self, spec: MeshSpec, server: ssl.SSLContext, listener: socket.socket) -> None:
        self.spec, self.server, self.listener = spec, server, listener
        self.refused: list[str] = []
        self.hub: Hub | None = None  # rank 0's own hub, whose refusals count as this session's
        # Links that came before they were awaited: a party that got the rank table may reach the dealer before
        # rank 0 does, while the dealer still waits for rank 0's link alone.
        self.early: dict[int, tuple[ssl.SSLSocket, dict[str, Any]]] = {}

    def accept(self, expected: set[int], deadline: float) -> dict[int, tuple[ssl.SSLSocket, dict[str, Any]]]:
        """The links of the `expected` ranks, with their hellos; LinkError naming the missing ones at the
        deadline, and what was refused meanwhile. Links of other ranks are kept for a later call."""
        got = {r: self.early.pop(r) for r in expected & set(self.early)}
        while expected - set(got):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = ", ".join(self.spec.who(r) for r in sorted(expected - set(got)))
                refusals = self.refused + (self.hub.refusals(self.spec.session) if self.hub else [])
                refused = f"; refused: {'; '.join(refusals)}" if refusals else ""
                raise LinkError(f"{missing} did not connect within {self.spec.timeout_s:.0f} s{refused}")
            self.listener.settimeout(left)
            try:
                raw, addr = self.listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(max(1.0, min(left, 10.0)))
            try:
                clear_openssl_errors()
                sock = self.server.wrap_socket(raw, server_side=True)
                hello = json.loads(recv_small(sock))
                rank = hello.get("rank")
                who = peer_principal(sock)
                if hello.get("session") != self.spec.session or not isinstance(rank, int) \
                        or not isinstance(hello.get("port"), int) \
                        or not 0 <= rank < len(self.spec.principals) or rank == self.spec.rank \
                        or rank in got or rank in self.early \
                        or who != self.spec.principals[rank]:
                    self.refused.append(f"{addr[0]} presented {who!r} claiming rank {rank!r} of session "
                                        f"{str(hello.get('session'))[:12]!r}")
                    sock.close()
                    continue
            except (OSError, ValueError, LinkError, EOFError) as e:  # no certificate, a bad one, no hello
                self.refused.append(f"{addr[0]}: {type(e).__name__}: {e}")
                raw.close()
                continue
            (got if rank in expected else self.early)[rank] = (sock, hello)
        return got

    def close(self) -> None:
        """Close the links no call took."""
        for sock, _ in self.early.values():
            sock.close()
        self.early.clear()


def _link(spec: MeshSpec, client: ssl.SSLContext, rank: int, host: str, port: int,
          deadline: float) -> ssl.SSLSocket | None:
    """A TLS connection to `rank` at (host, port), its certificate checked; None while nothing listens there yet."""
    try:
        raw = socket.create_connection((host, port), timeout=max(0.5, min(deadline - time.monotonic(), 10.0)))
    except OSError:
        return None
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        clear_openssl_errors()
        sock = client.wrap_socket(raw)
    except (OSError, ssl.SSLError) as e:
        raw.close()
        raise LinkError(f"TLS with {spec.who(rank)} at {host}:{port} failed: {e}") from None
    who = peer_principal(sock)
    if who != spec.principals[rank]:
        sock.close()
        raise LinkError(f"{host}:{port} presented a certificate for {who!r}, not {spec.who(rank)}")
    return sock


def _connect(spec: MeshSpec, client: ssl.SSLContext, rank: int, host: str, port: int, listen_port: int,
             deadline: float) -> ssl.SSLSocket:
    """The outgoing link to `rank` at (host, port), its certificate checked; retried until the deadline (the peer
    may not listen yet)."""
    while time.monotonic() < deadline:
        sock = _link(spec, client, rank, host, port, deadline)
        if sock is not None:
            send_frame(sock, _hello(spec, listen_port))
            return sock
        time.sleep(0.05)
    raise LinkError(f"cannot reach {spec.who(rank)} at {host}:{port} within {spec.timeout_s:.0f} s")


def _rank0_port(spec: MeshSpec, client: ssl.SSLContext, deadline: float) -> int:
    """The port this session's rank-0 worker listens on, from the hub at the zone's rendezvous port."""
    while time.monotonic() < deadline:
        sock = _link(spec, client, 0, *spec.hub, deadline)
        if sock is None:
            time.sleep(0.1)
            continue
        try:
            send_frame(sock, _hello(spec, 0))
            port = json.loads(recv_small(sock)).get("port")
        except (OSError, EOFError, ValueError):
            port = None  # the hub refused or closed: asked again
        finally:
            sock.close()
        if isinstance(port, int):
            return port
        time.sleep(0.1)  # rank 0's worker has not announced the session yet
    raise LinkError(f"{spec.who(0)} did not open session {spec.session[:12]} at {spec.hub[0]}:{spec.hub[1]} within "
                    f"{spec.timeout_s:.0f} s")


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(16)
    return sock


def _try(func: Any, *args: Any) -> Any:
    try:
        return func(*args)
    except BaseException as e:  # handed to the joining thread, which raises it
        return e


def join(spec: MeshSpec, announce: Announce | None = None) -> Mesh:
    """Connect this rank to every other of the session; LinkError naming the peer that failed or never came.
    Rank 0 announces its port with `announce` (to its zone's hub), or without it runs a hub of its own."""
    server, client = contexts(spec.credentials)
    deadline = time.monotonic() + spec.timeout_s
    world = len(spec.principals)
    listener = _listen("0.0.0.0", 0)  # on every interface: peers come by mutual TLS only
    port = listener.getsockname()[1]
    outgoing: dict[int, ssl.SSLSocket] = {}
    incoming: dict[int, ssl.SSLSocket] = {}
    acceptor = _Acceptor(spec, server, listener)
    own_hub: Hub | None = None
    try:
        if spec.rank == 0:
            if announce is None:
                own_hub = acceptor.hub = Hub(spec.principals, server, spec.hub[1])
                own_hub.announce(spec.session, port)
            else:
                announce(port)
            links = acceptor.accept(set(range(1, world)), deadline)
            incoming = {r: sock for r, (sock, _) in links.items()}
            # a rank is reached where its packets come from (a namespace's, container's or pod's own address)
            table = {r: (sock.getpeername()[0], int(hello["port"])) for r, (sock, hello) in links.items()}
            for r in range(1, world):  # rank 0's outgoing links, then the table on each
                outgoing[r] = _connect(spec, client, r, *table[r], port, deadline)
                send_frame(outgoing[r], json.dumps(table).encode())
        else:
            outgoing[0] = _connect(spec, client, 0, spec.hub[0], _rank0_port(spec, client, deadline), port, deadline)
            incoming[0] = acceptor.accept({0}, deadline)[0][0]
            table = {int(r): (h, p) for r, (h, p) in json.loads(recv_small(incoming[0])).items()}
            others = set(range(1, world)) - {spec.rank}
            # accepted on a thread: two ranks connecting to each other would otherwise wait for each other's accept
            accepted: dict[str, Any] = {}
            thread = threading.Thread(target=lambda: accepted.update(result=_try(acceptor.accept, others, deadline)),
                                      daemon=True)
            thread.start()
            for r in sorted(others):
                outgoing[r] = _connect(spec, client, r, *table[r], port, deadline)
            thread.join()
            result = accepted["result"]
            if isinstance(result, BaseException):
                raise result
            incoming.update({r: s for r, (s, _) in result.items()})
    except BaseException:
        for s in (*outgoing.values(), *incoming.values()):
            s.close()
        raise
    finally:
        listener.close()
        acceptor.close()
        if own_hub is not None:
            own_hub.close()
    for s in outgoing.values():
        s.settimeout(None)  # the sending thread waits as long as needed; `wait_sent` bounds the wait
    return Mesh(spec, outgoing, incoming)
