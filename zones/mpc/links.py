"""The MPC parties' and the dealer's links to each other: framed messages over mutual-TLS connections.

Every process of a session (compute parties 0..n-1, the dealer n) holds one outgoing TLS connection to every
other, which it only writes, and one incoming from every other, which it only reads: an SSL object is then used
by one thread at a time (OpenSSL's rule), while sends (a thread per outgoing link) overlap receives. How the
mesh is formed and its peers checked: `zones.mpc.rendezvous`.
"""

from __future__ import annotations

import _ssl
import contextlib
import ctypes
import queue
import ssl
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsi.transport.certs import Credentials

_HEADER = struct.Struct("<Q")    # every frame: its length, then its bytes
MAX_HELLO = 4096
_RECV_CHUNK = 1 << 20
_COALESCE = 1 << 14   # frames up to this size go out with their header in one write
_LIBSSL = ctypes.CDLL(_ssl.__file__)  # the OpenSSL the ssl module uses (its symbols resolve through it)


class LinkError(ConnectionError):
    """A link to a peer failed: the peer left, stalled past the deadline, or is not who the policy says.
    Not a RuntimeError: CrypTen takes those for out-of-memory in places and retries another way."""


@dataclass(frozen=True)
class MeshSpec:
    """Who this process is in the session's mesh and whom it expects: principals by rank (the dealer last)."""

    session: str
    rank: int
    principals: tuple[str, ...]
    hub: tuple[str, int]          # rank 0's address and the zone's rendezvous port, where it listens
    credentials: Credentials
    timeout_s: float
    dealer: bool                  # whether the last rank is the dealer

    def who(self, rank: int) -> str:
        """A peer as error messages name it."""
        role = "the dealer" if self.dealer and rank == len(self.principals) - 1 else f"party {rank}"
        return f"{role} ({self.principals[rank]})"


def clear_openssl_errors() -> None:
    """Empty this thread's OpenSSL error queue. Python 3.10's ssl module reads the queue when a read returns
    short, so an entry another library left there (SoftHSM's engine lookup leaves NO_SUCH_ENGINE) would surface as
    this link's failure."""
    _LIBSSL.ERR_clear_error()


def recv_exact(sock: ssl.SSLSocket, view: memoryview) -> None:
    """Fill `view` from `sock`; EOFError when the peer closes first."""
    clear_openssl_errors()
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:], min(len(view) - got, _RECV_CHUNK))
        if n == 0:
            raise EOFError
        got += n


def send_frame(sock: ssl.SSLSocket, data: bytes | memoryview) -> None:
    """Write one frame: its length, then its bytes."""
    clear_openssl_errors()
    if len(data) <= _COALESCE:  # one record, one segment: most of a protocol's messages are this small
        sock.sendall(_HEADER.pack(len(data)) + bytes(data))
        return
    sock.sendall(_HEADER.pack(len(data)))
    sock.sendall(data)


def recv_small(sock: ssl.SSLSocket) -> bytes:
    """Read one frame of at most MAX_HELLO bytes (a hello or the rank table)."""
    head = bytearray(_HEADER.size)
    recv_exact(sock, memoryview(head))
    (n,) = _HEADER.unpack(head)
    if n > MAX_HELLO:
        raise LinkError(f"a {n}-byte hello")
    body = bytearray(n)
    recv_exact(sock, memoryview(body))
    return bytes(body)


def contexts(creds: Credentials) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts that require and verify the peer's certificate against the deployment's CA."""
    with tempfile.TemporaryDirectory() as tmp:  # the ssl module loads a chain from files only
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_bytes(creds.cert)
        key.touch(mode=0o600)
        key.write_bytes(creds.key)
        contexts = []
        for purpose in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
            ctx = ssl.SSLContext(purpose)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.load_cert_chain(cert, key)
            ctx.load_verify_locations(cadata=creds.ca.decode())
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.check_hostname = False  # the peer is checked by the principal its certificate names
            contexts.append(ctx)
    contexts[0].num_tickets = 0  # no session tickets: a read-only side never reads them
    return contexts[0], contexts[1]


def peer_principal(sock: ssl.SSLSocket) -> str | None:
    """The common name of the peer's verified certificate."""
    cert: dict[str, Any] = sock.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class _Outgoing:
    """One outgoing link: frames queued by the caller, written by this link's own thread."""

    def __init__(self, sock: ssl.SSLSocket, name: str) -> None:
        self.sock, self.name = sock, name
        self.queue: queue.Queue[tuple[Any, threading.Event] | None] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"send to {name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            data, done = item
            try:
                if self.error is None:
                    send_frame(self.sock, data)
            except (OSError, ValueError) as e:
                self.error = e
            done.set()

    def send(self, data: Any) -> threading.Event:
        """Queue `data` (bytes-like, not to be changed until the event is set); the event is set once written."""
        if self.error is not None:
            raise LinkError(f"the link to {self.name} failed: {self.error}")
        done = threading.Event()
        self.queue.put((data, done))
        return done

    def close(self) -> None:
        """Stop the thread once what was queued is written, then close."""
        self.queue.put(None)
        self.thread.join(timeout=5)
        self.sock.close()


class Mesh:
    """This process's links of one session: `send` to and `recv_into` from any other rank."""

    def __init__(self, spec: MeshSpec, outgoing: dict[int, ssl.SSLSocket], incoming: dict[int, ssl.SSLSocket]) -> None:
        self.spec = spec
        self._out = {r: _Outgoing(s, spec.who(r)) for r, s in outgoing.items()}
        self._in = incoming
        for s in incoming.values():
            s.settimeout(spec.timeout_s)
        # per peer: [frames received, bytes received, frames sent, bytes sent] (exact, payload bytes)
        self.counts: dict[int, list[int]] = {r: [0, 0, 0, 0] for r in sorted(set(outgoing) | set(incoming))}

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self.spec.rank

    def peers(self) -> list[int]:
        """The other ranks."""
        return sorted(self._out)

    def send(self, dst: int, data: Any) -> threading.Event:
        """Queue one frame to `dst`; the event is set once it is written."""
        counts = self.counts[dst]
        counts[2] += 1
        counts[3] += memoryview(data).nbytes
        return self._out[dst].send(data)

    def wait_sent(self, done: threading.Event, dst: int) -> None:
        """Wait until a queued frame is written; LinkError when the link failed or the deadline passed."""
        if not done.wait(self.spec.timeout_s):
            raise LinkError(f"{self.spec.who(dst)} took nothing for {self.spec.timeout_s:.0f} s")
        error = self._out[dst].error
        if error is not None:
            raise LinkError(f"the link to {self.spec.who(dst)} failed: {error}")

    @contextlib.contextmanager
    def _receiving(self, src: int) -> Iterator[ssl.SSLSocket]:
        """The link from `src`; a failure on it raised as a LinkError naming the peer."""
        try:
            yield self._in[src]
        except LinkError:
            raise
        except TimeoutError:
            raise LinkError(f"{self.spec.who(src)} sent nothing for {self.spec.timeout_s:.0f} s") from None
        except EOFError:
            raise LinkError(f"{self.spec.who(src)} closed its link") from None
        except OSError as e:
            raise LinkError(f"the link from {self.spec.who(src)} failed: {e}") from None

    def _recv_length(self, sock: ssl.SSLSocket) -> int:
        head = bytearray(_HEADER.size)
        recv_exact(sock, memoryview(head))
        (n,) = _HEADER.unpack(head)
        return int(n)

    def recv_into(self, src: int, buffer: memoryview) -> None:
        """Receive one frame of exactly len(buffer) bytes from `src` into `buffer`."""
        with self._receiving(src) as sock:
            n = self._recv_length(sock)
            if n != len(buffer):
                raise LinkError(f"{self.spec.who(src)} sent a {n}-byte message where {len(buffer)} were due: "
                                "the parties are out of step")
            recv_exact(sock, buffer)
        self._received(src, n)

    def recv_bytes(self, src: int, limit: int) -> bytes:
        """Receive one frame of at most `limit` bytes from `src` (an object whose size the receiver cannot know)."""
        with self._receiving(src) as sock:
            n = self._recv_length(sock)
            if n > limit:
                raise LinkError(f"{self.spec.who(src)} sent a {n}-byte object; at most {limit} are accepted")
            body = bytearray(n)
            recv_exact(sock, memoryview(body))
        self._received(src, n)
        return bytes(body)

    def _received(self, src: int, n: int) -> None:
        counts = self.counts[src]
        counts[0] += 1
        counts[1] += n

    def close(self) -> None:
        """Flush and close every link."""
        for link in self._out.values():
            link.close()
        for s in self._in.values():
            s.close()
