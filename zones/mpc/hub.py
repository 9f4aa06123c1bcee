"""Rank 0's rendezvous hub: tells each peer of a session where that session's rank-0 worker listens.

Rank 0's zone process keeps the zone's rendezvous port for as long as it runs, so that several sessions can form
their meshes at once: each session's rank-0 worker listens on a port of its own and announces it here; a peer
asks over mutual TLS (its certificate checked against the principal of the rank it claims), gets the port, and
links to the worker directly (`rendezvous`). Without a zone process (local runs) rank 0 runs a hub for its own
session only.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from typing import Any

from zones.mpc.links import LinkError, clear_openssl_errors, peer_principal, recv_small, send_frame

log = logging.getLogger("hsi.mpc")
_ASK_S = 5.0  # how long one question waits for its session's worker to announce itself


class Hub:
    """The session -> port directory of rank 0's workers, answered on the rendezvous port."""

    def __init__(self, principals: tuple[str, ...], server: ssl.SSLContext, port: int, ask_s: float = _ASK_S) -> None:
        self.principals = principals
        self.ask_s = ask_s
        self._server = server
        self._ports: dict[str, int] = {}
        self._changed = threading.Condition()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("0.0.0.0", port))  # on every interface: peers come by mutual TLS only
        self._listener.listen(64)
        self._closed = False
        self._refused: list[tuple[float, str, str]] = []  # (when, session claimed or "", what)
        self._thread = threading.Thread(target=self._serve, name="mpc-rendezvous-hub", daemon=True)
        self._thread.start()

    def announce(self, session: str, port: int) -> None:
        """Session `session`'s rank-0 worker listens on `port`."""
        with self._changed:
            self._ports[session] = port
            self._changed.notify_all()

    def forget(self, session: str) -> None:
        """The session's mesh is formed or over: no more peers are sent to it."""
        with self._changed:
            self._ports.pop(session, None)

    def refusals(self, session: str, within_s: float = 600.0) -> list[str]:
        """What was refused for `session` (or for no readable session) in the last `within_s` seconds."""
        since = time.monotonic() - within_s
        with self._changed:
            return [what for when, sid, what in self._refused if when >= since and sid in (session, "")]

    def _refuse(self, session: str, what: str) -> None:
        log.warning("rendezvous: refused %s", what)
        with self._changed:
            self._refused = self._refused[-63:] + [(time.monotonic(), session, what)]

    def _port(self, session: str) -> int | None:
        end = time.monotonic() + self.ask_s
        with self._changed:
            while session not in self._ports and not self._closed and time.monotonic() < end:
                self._changed.wait(end - time.monotonic())
            return self._ports.get(session)

    def _answer(self, raw: socket.socket, addr: Any) -> None:
        raw.settimeout(10.0)
        try:
            clear_openssl_errors()
            with self._server.wrap_socket(raw, server_side=True) as sock:
                hello = json.loads(recv_small(sock))
                rank, who, session = hello.get("rank"), peer_principal(sock), str(hello.get("session"))
                if not isinstance(rank, int) or not 0 < rank < len(self.principals) or who != self.principals[rank]:
                    self._refuse(session, f"{addr[0]} presented {who!r} claiming rank {rank!r} of session "
                                          f"{session[:12]!r}")
                    return
                send_frame(sock, json.dumps({"port": self._port(session)}).encode())
        except (OSError, ValueError, LinkError, EOFError) as e:  # no certificate, a bad one, no hello
            self._refuse("", f"{addr[0]}: {type(e).__name__}: {e}")
            raw.close()

    def _serve(self) -> None:
        while not self._closed:
            try:
                raw, addr = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(raw, addr), name="mpc-rendezvous-answer",
                             daemon=True).start()

    def close(self) -> None:
        """Stop answering."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(timeout=5)
