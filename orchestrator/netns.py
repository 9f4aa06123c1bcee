"""Separate hosts on one machine: a network namespace per party, joined by a bridge, shaped by tc netem.

Each party gets its own namespace (its own loopback, its own address on the bridge), its bundle, and its
zone processes started from the bundle inside the namespace; the runtime runs in the client's namespace.
A zone can reach another only at the address the policy gives it. Needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.bundle import make_bundle
from orchestrator.policy import load_policy

BRIDGE = "hsi-br0"
SUBNET = "10.77.0"


@dataclass(frozen=True)
class Profile:
    """A network profile, applied by netem to the egress of every party's interface.

    A request and its reply each leave through one party's interface, so the round trip between two
    parties is 2 x delay_ms.
    """

    delay_ms: float
    rate: str


PROFILES = {"lan": Profile(0.1, "10gbit"), "wan": Profile(20.0, "100mbit")}  # RTT 0.2 ms / 40 ms


class NetnsError(RuntimeError):
    """A namespace deployment that could not be set up; the message has the failing command."""


def _run(*cmd: str, ns: str | None = None) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    r = subprocess.run(full, capture_output=True, text=True)
    if r.returncode:
        raise NetnsError(f"`{' '.join(full)}` failed: {r.stderr.strip()}")
    return r.stdout


@dataclass
class NetnsDeployment:
    """A running deployment: namespace and address per party, bundle directories, zone process groups."""

    policy: Path                       # the policy with namespace addresses (the client's bundle copy)
    namespaces: dict[str, str]
    addresses: dict[str, str]
    bundles: dict[str, Path]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    shaping: str = ""                  # what tc applied on every party's interface

    def client_python(self, code: str, timeout: float) -> str:
        """Run Python code as the client party, in its namespace with its bundle's keys; its stdout."""
        client = load_policy(self.policy).client
        cmd = ["ip", "netns", "exec", self.namespaces[client], "env",
               f"HSI_CERTS_DIR={self.bundles[client] / 'certs'}", sys.executable, "-c", code]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise NetnsError(f"the client's code failed in namespace {self.namespaces[client]}: "
                             f"{r.stderr.strip()[-1500:]}")
        return r.stdout

    def embed(self, text: str, timeout: float = 600.0) -> dict[str, Any]:
        """The client's `embed` result (the `--json` object) run across the namespaces."""
        code = ("import json\nfrom orchestrator.policy import load_policy\nfrom orchestrator.runtime import Runtime\n"
                f"rt = Runtime(load_policy({str(self.policy)!r}))\n"
                f"print(json.dumps(rt.embed({text!r}).to_dict()))\nrt.close()\n")
        return dict(json.loads(self.client_python(code, timeout).strip().splitlines()[-1]))


def namespaced_policy(policy_path: Path, out: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the policy with each party at its own address on the bridge; (path, party -> address)."""
    data = yaml.safe_load(policy_path.read_text())
    addresses = {party: f"{SUBNET}.{i + 1}" for i, party in enumerate(data["parties"])}
    for party, addr in addresses.items():
        data["parties"][party]["address"] = addr
    out.mkdir(parents=True, exist_ok=True)
    path = out / policy_path.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, addresses


def _shape(ns: str, prof: Profile) -> str:
    """Apply the profile to the namespace's eth0: netem delay and rate, or (no netem in this kernel) tbf rate."""
    try:
        _run("tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", f"{prof.delay_ms}ms", "rate", prof.rate,
             ns=ns)
        return f"netem delay {prof.delay_ms} ms rate {prof.rate}"
    except NetnsError as e:
        if "unknown" not in str(e) or prof.delay_ms > 1.0:
            raise NetnsError(f"{e} (tc netem is missing from this kernel, so a {prof.delay_ms} ms delay cannot be "
                             "emulated here)") from None
    # Sub-millisecond LAN latency is below what this comparison measures; keep the rate limit.
    _run("tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", prof.rate, "burst", "4mb", "latency", "50ms",
         ns=ns)
    return f"tbf rate {prof.rate} (no netem in this kernel: {prof.delay_ms} ms delay not applied)"


def _teardown(namespaces: list[str]) -> None:
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


@contextlib.contextmanager
def netns_deployment(policy_path: str | Path, workdir: str | Path, profile: str = "lan",
                     startup_s: float = 120.0) -> Iterator[NetnsDeployment]:
    """Run every party of the policy in its own namespace under a network profile; tear all down after."""
    if os.geteuid() != 0:
        raise NetnsError("network namespaces need root")
    if profile not in PROFILES:
        raise NetnsError(f"unknown network profile {profile!r}; known: {', '.join(PROFILES)}")
    prof = PROFILES[profile]
    work = Path(workdir)
    path, addresses = namespaced_policy(Path(policy_path), work / "policy")
    namespaces = {party: f"hsi-{i}" for i, party in enumerate(addresses)}
    _teardown(list(namespaces.values()))  # leftovers of a crashed run
    dep = NetnsDeployment(path, namespaces, addresses, {})
    try:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "link", "set", BRIDGE, "up")
        for i, (party, ns) in enumerate(namespaces.items()):
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", f"hsi-v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", f"hsi-v{i}", "master", BRIDGE, "up")
            _run("ip", "addr", "add", f"{addresses[party]}/24", "dev", "eth0", ns=ns)
            _run("ip", "link", "set", "eth0", "up", ns=ns)
            _run("ip", "link", "set", "lo", "up", ns=ns)
            dep.shaping = _shape(ns, prof)
        hsi = str(Path(sys.executable).parent / "hsi")
        for party, ns in namespaces.items():
            dep.bundles[party] = work / "bundles" / party
            # a PKI of its own: the certificates must name the namespace addresses
            make_bundle(path, party, dep.bundles[party], pki=work / "pki")
            dep.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, str(dep.bundles[party] / "start.sh")],
                env={**os.environ, "HSI": hsi}, start_new_session=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        dep.policy = dep.bundles[load_policy(path).client] / "policy.yaml"
        _wait_ready(dep, startup_s)
        yield dep
    finally:
        for p in dep.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in dep.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        _teardown(list(namespaces.values()))


def _wait_ready(dep: NetnsDeployment, timeout: float) -> None:
    """Block until the client's namespace reaches every zone's health check."""
    code = ("from orchestrator.policy import load_policy\nfrom orchestrator.runtime import Runtime\n"
            f"rt = Runtime(load_policy({str(dep.policy)!r}))\nrt.wait_ready({timeout})\nrt.close()\n")
    try:
        dep.client_python(code, timeout + 30)
    except NetnsError as e:
        logs = "\n".join(f"--- {f}:\n{f.read_text()[-1500:]}" for b in dep.bundles.values()
                         for f in sorted((b / "run").glob("*.log")))
        raise NetnsError(f"{e}\n{logs}") from None
