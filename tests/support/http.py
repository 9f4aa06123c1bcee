"""`hsi serve --http-port` as a real process for tests: started, waited for until ready, stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_ports


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    """GET `url`: (status, body), for error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post(url: str, body: bytes, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    """POST raw bytes as JSON to `url`: (status, decoded JSON body)."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class HttpService:
    """A running `hsi serve --policy P --http-port N ARGS` process."""

    def __init__(self, policy: Path, log: Path, *args: str) -> None:
        grpc_port, http_port = free_ports(2)
        self.log = log
        self.base = f"http://127.0.0.1:{http_port}"
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--policy", str(policy),
                                          "--port", str(grpc_port), "--http-port", str(http_port), *args],
                                         cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 300) -> None:
        """Until /readyz answers 200: every zone answers health and the warm-up forward pass ran."""
        end = time.monotonic() + timeout_s
        while True:
            try:
                if get(f"{self.base}/readyz", timeout=5)[0] == 200:
                    return
            except OSError:
                pass  # not listening yet
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"hsi serve did not become ready:\n{self.log.read_text()}")
            time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM: the service stops uvicorn and the gRPC server, then exits (RuntimeError if it does not)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)  # a loaded machine takes its time to tear down torch and gRPC at exit
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError(f"hsi serve did not stop on SIGTERM:\n{self.log.read_text()}") from None


@contextmanager
def http_service(policy: Path, log: Path, *args: str) -> Iterator[HttpService]:
    """`hsi serve --http-port` for the block, started at once (it loads its model while the zones start)."""
    svc = HttpService(policy, log, *args)
    try:
        yield svc
    finally:
        svc.stop()
