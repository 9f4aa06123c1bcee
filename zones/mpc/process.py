"""The zone's handle on one CrypTen worker process (`worker`): started from a fork server, driven over a pipe,
killed when its session ends or is abandoned."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import grpc

from hsi.transport.status import ZoneError
from zones.mpc.worker import Preload, worker_main

# Workers fork from a server that has done their imports (zones/mpc/preload.py) but never ran tensor math: a child
# forked from a process that used PyTorch's OpenMP pool deadlocks in it.
_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["zones.mpc.preload"])


class WorkerProcess:
    """A CrypTen worker process (forked from the fork server) and the pipe to it."""

    def __init__(self, preload: Preload | None = None) -> None:
        self.conn, child = _CTX.Pipe()
        self.process = _CTX.Process(target=worker_main, args=(child, preload), daemon=True)
        self.process.start()
        child.close()
        self.last_used = time.monotonic()
        self.busy = False  # a request is under way (a stage runs): a release kills at once

    def request(self, message: tuple[Any, ...], timeout: float, what: str,
                on_listening: Callable[[int], None] | None = None) -> tuple[Any, ...]:
        """Send a message and wait for the worker's answer; ZoneError when it fails, dies or overruns. A joining
        rank 0 first says where it listens (`on_listening`)."""
        self.last_used = time.monotonic()
        end = self.last_used + timeout
        self.busy = True
        try:
            if message:
                self.conn.send(message)
            while True:
                ready = self.conn.poll(max(0.0, end - time.monotonic()))
                reply = self.conn.recv() if ready else None
                if reply is None or reply[0] != "listening":
                    break
                if on_listening is not None:
                    on_listening(int(reply[1]))
        except (EOFError, OSError, BrokenPipeError):
            reply = ("error", f"the worker process exited (code {self.process.exitcode})")
        finally:
            self.busy = False
        self.last_used = time.monotonic()
        if reply is None:
            self.kill()
            raise ZoneError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{what} gave no answer within {timeout:.0f} s")
        if reply[0] == "error":
            self.kill()
            raise ZoneError(grpc.StatusCode.ABORTED, f"{what} failed: {reply[1]}")
        return reply

    def close(self, timeout: float = 10.0) -> tuple[Any, ...] | None:
        """Ask the worker to leave the session cleanly; kill it if it does not, or at once while a stage runs
        (the session was abandoned: its caller left). The worker's last message, None if it gave none."""
        if self.busy:
            self.kill()
            return None
        reply = None
        if self.process.is_alive():
            try:
                self.conn.send(("close",))
                reply = self.conn.recv() if self.conn.poll(timeout) else None
            except (EOFError, OSError):
                pass
        self.process.join(timeout=2)
        self.kill()
        return reply

    def finished(self, timeout: float = 10.0) -> tuple[Any, ...] | None:
        """Wait for a worker that ends by itself (the dealer's, when rank 0 leaves); its last message, None if it
        gave none in time. The worker is gone afterwards."""
        reply = None
        try:
            if self.conn.poll(timeout):
                reply = self.conn.recv()
        except (EOFError, OSError):
            pass
        self.process.join(timeout=2)
        self.kill()
        return reply

    def kill(self) -> None:
        """Stop the worker now."""
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        try:
            self.conn.close()
        except OSError:  # closed already, by a failed request racing this release
            pass
