"""A policy deployed across namespaces: each party's zones started from its bundle in its own namespace; the
runtime runs in the client's. A zone can reach another only at the address the policy gives it. Needs root."""

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

from hsi.policy import TeeZone, load_policy
from orchestrator.bundle import make_bundle
from orchestrator.netns.network import SUBNET, NetnsError, network, stop_processes


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
        stop_processes([self.procs.pop(party)], signal.SIGKILL)
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
        code = ("import json\nfrom hsi.policy import load_policy\nfrom orchestrator.runtime import Runtime\n"
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
                                     "from hsi.policy import load_policy\n"
                                     f"ensure_keys(load_policy({str(bundle_policy)!r}))\n", 120.0)
            yield dep
        finally:
            stop_processes(list(dep.procs.values()))


def _wait_ready(dep: NetnsDeployment, timeout: float) -> None:
    """Block until the client's namespace reaches every zone's health check."""
    code = ("from hsi.policy import load_policy\nfrom orchestrator.runtime import Runtime\n"
            f"rt = Runtime(load_policy({str(dep.policy)!r}))\nrt.wait_ready({timeout})\nrt.close()\n")
    try:
        dep.client_python(code, timeout + 30)
    except NetnsError as e:
        logs = "\n".join(f"--- {f}:\n{f.read_text()[-1500:]}" for b in dep.bundles.values()
                         for f in sorted((b / "run").glob("*.log")))
        raise NetnsError(f"{e}\n{logs}") from None
