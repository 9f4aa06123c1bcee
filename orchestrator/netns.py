"""Separate hosts on one machine: a network namespace per party, joined by a bridge, shaped by a profile.

Each party gets its own namespace (its own loopback, its own address on the bridge), its bundle, and its
zone processes started from the bundle inside the namespace; the runtime runs in the client's namespace.
A zone can reach another only at the address the policy gives it. Needs root.

Shaping: `tc netem` (delay and rate on each party's egress) where the kernel has it. Where it does not (this
sandbox's kernel), `tbf` limits the rate and, for delays of a millisecond or more, every packet entering a
party's namespace waits in an NFQUEUE for `delay_ms` (orchestrator/delay_queue.py, a user-space netem), so a
round trip between two parties still takes 2 x delay_ms. The delay is applied on ingress: held on egress, a
packet would still count against its socket's TCP small-queue budget and cap throughput at a few Mbit/s.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.bundle import make_bundle
from orchestrator.policy import TeeZone, load_policy

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


PROFILES = {"lan": Profile(0.1, "10gbit"), "wan": Profile(20.0, "100mbit")}  # RTT 0.2 ms / 40 ms
MIN_QUEUED_DELAY_MS = 1.0


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
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # party -> its start.sh group
    shaping: str = ""                  # what tc applied on every party's interface

    def start(self, party: str) -> None:
        """Start `party`'s zones from its bundle's start script, in its namespace."""
        hsi = str(Path(sys.executable).parent / "hsi")
        self.procs[party] = subprocess.Popen(
            ["ip", "netns", "exec", self.namespaces[party], str(self.bundles[party] / "start.sh")],
            env={**os.environ, "HSI": hsi}, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def restart(self, party: str, startup_s: float = 120.0) -> None:
        """Kill every zone process of `party` (as a crash or reboot would) and start them again from the same
        bundle; return once the client reaches every zone again."""
        _stop([self.procs.pop(party)], signal.SIGKILL)
        self.start(party)
        _wait_ready(self, startup_s)

    def as_party(self, party: str, argv: list[str]) -> list[str]:
        """The command line that runs `argv` as `party`: in its namespace, with its bundle's keys."""
        return ["ip", "netns", "exec", self.namespaces[party], "env",
                f"HSI_CERTS_DIR={self.bundles[party] / 'certs'}", *argv]

    def client_hsi(self, argv: list[str]) -> list[str]:
        """The command line of an `hsi` command (`embed TEXT`, `generate PROMPT`, ...) run by the client under
        the client's bundle policy."""
        hsi = str(Path(sys.executable).parent / "hsi")
        return self.as_party(load_policy(self.policy).client, [hsi, *argv, "--policy", str(self.policy)])

    def party_python(self, party: str, code: str, timeout: float) -> str:
        """Run Python code as `party`, in its namespace with its bundle's keys; its stdout."""
        r = subprocess.run(self.as_party(party, [sys.executable, "-c", code]), capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode:
            raise NetnsError(f"{party}'s code failed in namespace {self.namespaces[party]}: "
                             f"{r.stderr.strip()[-1500:]}")
        return r.stdout

    def client_python(self, code: str, timeout: float) -> str:
        """Run Python code as the client party, in its namespace with its bundle's keys; its stdout."""
        return self.party_python(load_policy(self.policy).client, code, timeout)

    def _client_run(self, call: str, timeout: float) -> dict[str, Any]:
        """The `--json` object of `Runtime(policy).<call>` run as the client across the namespaces."""
        code = ("import json\nfrom orchestrator.policy import load_policy\nfrom orchestrator.runtime import Runtime\n"
                f"rt = Runtime(load_policy({str(self.policy)!r}))\n"
                f"print(json.dumps(rt.{call}.to_dict()))\nrt.close()\n")
        return dict(json.loads(self.client_python(code, timeout).strip().splitlines()[-1]))

    def embed(self, text: str, timeout: float = 600.0) -> dict[str, Any]:
        """The client's `embed` result (the `--json` object) run across the namespaces."""
        return self._client_run(f"embed({text!r})", timeout)

    def generate(self, prompt: str, max_new_tokens: int, chat: bool = True,
                 timeout: float = 3600.0) -> dict[str, Any]:
        """The client's `generate` result (the `--json` object) run across the namespaces."""
        return self._client_run(f"generate({prompt!r}, {max_new_tokens}, {chat!r})", timeout)


def _tee_files(name: str, zone: dict[str, Any], out: Path) -> None:
    """A tee zone's files for parties whose processes start in their bundles' directories: the dev HSM token,
    PIN and platform key at absolute paths (SoftHSM's config rewritten to name its token directory absolutely),
    the enclave's sealed keys and audit log new under `out`."""
    base = Path.cwd()  # where the policy's relative paths point for `hsi up`
    state = out / "tee" / name
    state.mkdir(parents=True, exist_ok=True)
    zone["key_dir"], zone["audit_log"] = str(state / "keys"), str(state / "audit.log")
    if zone.get("platform_key_file"):
        zone["platform_key_file"] = str((base / zone["platform_key_file"]).resolve())
    hsm = zone.setdefault("hsm", {})
    if hsm.get("pin_file"):
        hsm["pin_file"] = str((base / hsm["pin_file"]).resolve())
    if hsm.get("softhsm_conf"):
        lines = []
        for line in (base / hsm["softhsm_conf"]).read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "directories.tokendir":
                line = f"directories.tokendir = {(base / value.strip()).resolve()}"
            lines.append(line)
        conf = state / "softhsm2.conf"
        conf.write_text("\n".join(lines) + "\n")
        hsm["softhsm_conf"] = str(conf)


def namespaced_policy(policy_path: Path, out: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the policy with each party at its own address on the bridge (and its tee zones' files where
    every party's processes find them); (path, party -> address)."""
    data = yaml.safe_load(policy_path.read_text())
    addresses = {party: f"{SUBNET}.{i + 1}" for i, party in enumerate(data["parties"])}
    for party, addr in addresses.items():
        data["parties"][party]["address"] = addr
    for name, zone in data["zones"].items():
        if zone.get("kind") == "tee":
            _tee_files(name, zone, out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / policy_path.name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, addresses


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


def _stop(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> None:
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
            _stop(net.procs)
            _teardown(slot)


@contextlib.contextmanager
def netns_deployment(policy_path: str | Path, workdir: str | Path, profile: str = "lan",
                     startup_s: float = 120.0) -> Iterator[NetnsDeployment]:
    """Run every party of the policy in its own namespace under a network profile; tear all down after."""
    work = Path(workdir)
    path, addresses = namespaced_policy(Path(policy_path), work / "policy")
    with network(addresses, profile) as net:
        dep = NetnsDeployment(path, net.namespaces, addresses, {}, shaping=net.shaping)
        try:
            for party in net.namespaces:
                dep.bundles[party] = work / "bundles" / party
                # a PKI of its own: the certificates must name the namespace addresses
                make_bundle(path, party, dep.bundles[party], pki=work / "pki")
                dep.start(party)
            policy = load_policy(path)
            dep.policy = dep.bundles[policy.client] / "policy.yaml"
            _wait_ready(dep, startup_s)
            for zone in policy.zones.values():
                if isinstance(zone, TeeZone):  # the key holder's admin creates the HE zones' keys, as `hsi up` does
                    bundle_policy = dep.bundles[zone.party] / "policy.yaml"
                    dep.party_python(zone.party, "from orchestrator.launcher import ensure_keys\n"
                                     "from orchestrator.policy import load_policy\n"
                                     f"ensure_keys(load_policy({str(bundle_policy)!r}))\n", 120.0)
            yield dep
        finally:
            _stop(list(dep.procs.values()))


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
