"""Zone processes for tests, started by the launcher's own spawner and waited for until they answer health."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hsi.policy import ZoneProcess, load_policy
from hsi.transport.certs import load_credentials
from hsi.transport.server import secure_channel
from orchestrator.launcher import spawn_zone


def wait_serving(target: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Wait until the zone process `proc` answers health checks at `target`; its log if it dies or times out."""
    creds = load_credentials(Path(os.environ["HSI_CERTS_DIR"]), "client/runtime")
    channel = secure_channel(creds, target)
    stub = health_pb2_grpc.HealthStub(channel)
    end = time.monotonic() + timeout
    try:
        while True:
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                return
            except grpc.RpcError:
                if proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(log.read_text()) from None
                time.sleep(0.3)
    finally:
        channel.close()


def start_zone(policy_path: Path, zone: str, party: str, log: Path, dealer: bool = False,
               wait: bool = True) -> subprocess.Popen[bytes]:
    """One zone process of a policy, as `hsi up` starts it; with `wait`, once it answers health."""
    policy = load_policy(policy_path)
    proc = spawn_zone(policy_path, ZoneProcess(zone, party, "", dealer), log)
    if wait:
        target = policy.dealer_endpoint(zone)[1] if dealer else policy.zone_endpoints(zone)[party]
        try:
            wait_serving(target, proc, log)
        except RuntimeError:
            stop_zone(proc)
            raise
    return proc


def stop_zone(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Signal a zone process (and its workers: the launcher starts it in a session of its own); its exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout)
