"""Separate hosts on one machine: a network namespace per party on a bridge of its own, shaped by a profile.

Shaping: `tc netem` (delay and rate on each party's egress) where the kernel has it. Where it does not (this
sandbox's kernel), `tbf` limits the rate and, for delays of a millisecond or more, every packet entering a
party's namespace waits in an NFQUEUE for `delay_ms` (orchestrator/delay_queue.py, a user-space netem), so a
round trip between two parties still takes 2 x delay_ms. The delay is applied on ingress: held on egress, a
packet would still count against its socket's TCP small-queue budget and cap throughput at a few Mbit/s.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hsi.errors import HsiError

SUBNET = "10.77.0"
SLOTS = 8  # deployments one machine runs at once, each on its own bridge
LOCK_DIR = Path("/run/hsi-netns")


@dataclass(frozen=True)
class Profile:
    """A network profile, applied by netem to the egress of every party's interface.

    A request and its reply each leave through one party's interface, so the round trip between two
    parties is 2 x delay_ms.
    """

    delay_ms: float
    rate: str


# RTT 0.2 ms / 40 ms; and the wan's two halves, to split its time between latency and bandwidth
PROFILES = {"lan": Profile(0.1, "10gbit"), "wan": Profile(20.0, "100mbit"),
            "wan-latency": Profile(20.0, "1gbit"), "wan-bandwidth": Profile(0.0, "100mbit")}
MIN_QUEUED_DELAY_MS = 1.0


class NetnsError(HsiError, RuntimeError):
    """A namespace deployment that could not be set up; the message has the failing command."""


def _run(*cmd: str, ns: str | None = None) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    r = subprocess.run(full, capture_output=True, text=True)
    if r.returncode:
        raise NetnsError(f"`{' '.join(full)}` failed: {r.stderr.strip()}")
    return r.stdout



def _shape(ns: str, prof: Profile) -> tuple[str, subprocess.Popen[bytes] | None]:
    """Apply the profile to the namespace's eth0: (what was applied, the delay process if one was started)."""
    try:
        _run("tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", f"{prof.delay_ms}ms", "rate", prof.rate,
             ns=ns)
        return f"netem delay {prof.delay_ms} ms rate {prof.rate}", None
    except NetnsError as e:
        if "unknown" not in str(e):
            raise
    _run("tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", prof.rate, "burst", "4mb", "latency", "50ms",
         ns=ns)
    if prof.delay_ms < MIN_QUEUED_DELAY_MS:
        # A user-space hop adds ~0.2 ms of its own: below a millisecond, the rate limit alone is closer.
        return f"tbf rate {prof.rate} (no netem in this kernel: {prof.delay_ms} ms delay not applied)", None
    if shutil.which("iptables") is None:
        raise NetnsError(f"the {prof.delay_ms} ms delay needs netem or iptables' NFQUEUE; this kernel has no netem "
                         "and iptables is not installed (apt-get install iptables)")
    _run("iptables", "-A", "INPUT", "-i", "eth0", "-j", "NFQUEUE", "--queue-num", "0", ns=ns)
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "orchestrator.delay_queue",
                             "--queue", "0", "--delay-ms", str(prof.delay_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith(b"delaying"):
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise NetnsError(f"the delay queue of namespace {ns} did not start: {err.strip()[-500:]}")
    return f"tbf rate {prof.rate} + nfqueue delay {prof.delay_ms} ms on ingress (no netem in this kernel)", proc


@dataclass(frozen=True)
class Slot:
    """The device names of one deployment: slot 0 is `hsi-br0`, `hsi-v<i>`, `hsi-<i>`; slot k `hsi<k>-…`.

    Deployments in different slots run side by side (each party's address is private to its namespace); a
    slot is taken while a process holds its lock file, so a crashed deployment's slot is free again and its
    leftovers are removed by the next deployment that takes it."""

    number: int

    @property
    def prefix(self) -> str:
        return "hsi" if self.number == 0 else f"hsi{self.number}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br0"

    def namespace(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def veth(self, i: int) -> str:
        return f"{self.prefix}-v{i}"


@contextlib.contextmanager
def _claim_slot() -> Iterator[Slot]:
    """The first slot no running deployment holds, held until the block ends."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for number in range(SLOTS):
        fd = os.open(LOCK_DIR / f"{number}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield Slot(number)
        finally:
            os.close(fd)  # releases the lock
        return
    raise NetnsError(f"all {SLOTS} namespace slots are in use by running deployments (locks in {LOCK_DIR})")


def _forward_rule(slot: Slot) -> list[str]:
    # Bridged frames pass the host's iptables FORWARD chain when br_netfilter is loaded, and a host firewall
    # whose FORWARD policy is DROP (Docker's daemon sets one) would drop every packet between two parties.
    return ["FORWARD", "-i", slot.bridge, "-o", slot.bridge, "-j", "ACCEPT"]


def _admit_bridged(slot: Slot) -> None:
    """Let the host's firewall forward traffic between the slot's namespaces, whatever its FORWARD policy."""
    if shutil.which("iptables") is not None:
        _run("iptables", "-I", *_forward_rule(slot))


def _teardown(slot: Slot) -> None:
    """Remove every device, namespace and firewall rule of the slot (this deployment's, or a crashed one's)."""
    if shutil.which("iptables") is not None:
        while subprocess.run(["iptables", "-D", *_forward_rule(slot)], capture_output=True).returncode == 0:
            pass
    ours = re.compile(rf"{re.escape(slot.prefix)}-v?\d+")
    links = [ln.split(":")[1].strip().split("@")[0] for ln in _run("ip", "-o", "link", "show").splitlines()]
    names = [ln.split()[0] for ln in _run("ip", "netns", "list").splitlines() if ln.strip()]
    # The host ends first: deleting one removes its pair at once, whereas the kernel frees a deleted
    # namespace's devices later, and a deployment right after would find `hsi-v0` still there.
    for link in links:
        if ours.fullmatch(link):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
    for ns in names:
        if ours.fullmatch(ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", slot.bridge], capture_output=True)


@dataclass
class Network:
    """Namespaces of parties on one bridge, shaped: party -> namespace and address, what shaping was applied."""

    namespaces: dict[str, str]
    addresses: dict[str, str]
    shaping: str
    procs: list[subprocess.Popen[bytes]]


def stop_processes(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> None:
    """Signal each process group (TERM, then KILL after 15 s) and reap them."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)


@contextlib.contextmanager
def network(addresses: dict[str, str], profile: str = "lan") -> Iterator[Network]:
    """A namespace per party (named by `addresses`' order) on a bridge of its own under a network profile; torn
    down after, or on failure."""
    if os.geteuid() != 0:
        raise NetnsError("network namespaces need root")
    if profile not in PROFILES:
        raise NetnsError(f"unknown network profile {profile!r}; known: {', '.join(PROFILES)}")
    prof = PROFILES[profile]
    with _claim_slot() as slot:
        namespaces = {party: slot.namespace(i) for i, party in enumerate(addresses)}
        _teardown(slot)  # leftovers of a crashed run in this slot
        net = Network(namespaces, dict(addresses), "", [])
        try:
            _run("ip", "link", "add", slot.bridge, "type", "bridge")
            _run("ip", "link", "set", slot.bridge, "up")
            _admit_bridged(slot)
            for i, (party, ns) in enumerate(namespaces.items()):
                _run("ip", "netns", "add", ns)
                _run("ip", "link", "add", slot.veth(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
                _run("ip", "link", "set", slot.veth(i), "master", slot.bridge, "up")
                _run("ip", "addr", "add", f"{addresses[party]}/24", "dev", "eth0", ns=ns)
                _run("ip", "link", "set", "eth0", "up", ns=ns)
                _run("ip", "link", "set", "lo", "up", ns=ns)
                net.shaping, proc = _shape(ns, prof)
                if proc is not None:
                    net.procs.append(proc)
            yield net
        finally:
            stop_processes(net.procs)
            _teardown(slot)
