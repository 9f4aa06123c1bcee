"""Local deployment: start every zone of a policy as a process on this machine, wait for health, stop them."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from hsi import kinds
from hsi.errors import HsiError
from hsi.ir import ZoneKind
from hsi.policy import Policy, ZoneProcess, load_policy
from hsi.transport.certs import certs_dir, init_ca, issue
from zones.engines import register_all


class LaunchError(HsiError, RuntimeError):
    """Zones that could not be started; the message carries the failing zone's log tail."""


def state_dir() -> Path:
    """Where run state and zone logs go (HSI_STATE_DIR, default .hsi/run)."""
    return Path(os.environ.get("HSI_STATE_DIR", ".hsi/run"))


def principals(policy: Policy) -> dict[str, list[str]]:
    """Every principal of a policy (each zone process and the runtime) -> the hosts its certificate names."""
    out = {policy.runtime_principal: [policy.parties[policy.client].address]}
    for proc in policy.processes():
        out[policy.process_principal(proc)] = [policy.parties[proc.party].address]
    for g in policy.keys:  # operators and zones named in key grants
        party = g.principal.partition("/")[0]
        out.setdefault(g.principal, [policy.parties[party].address])
    return out


def ensure_certs(policy: Policy, directory: Path | None = None) -> list[str]:
    """Create the dev CA if missing and issue every missing certificate of the policy; the principals issued."""
    d = directory or certs_dir(policy)
    init_ca(d)
    return [p for p, hosts in principals(policy).items() if issue(d, p, hosts)]


def _state_file(policy: Policy) -> Path:
    return state_dir() / f"{policy.name}.json"


def _alive(pid: int) -> bool:
    try:  # reap it first if it is our own exited child, or it would linger as a zombie that looks alive
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _recorded(policy: Policy) -> dict[str, int]:
    """The zone processes `up` recorded for this exact policy (none if the policy changed since)."""
    f = _state_file(policy)
    if not f.is_file():
        return {}
    state = json.loads(f.read_text())
    if state.get("policy_digest") != policy.digest():
        return {}
    return {k: int(v) for k, v in state["pids"].items()}


def running(policy: Policy) -> dict[str, int] | None:
    """The live zone processes of a policy started by `up`, or None when it is not (fully) up."""
    pids = _recorded(policy)
    whole = set(pids) == {proc.key for proc in policy.started_processes()}
    return pids if whole and all(_alive(p) for p in pids.values()) else None


def _survivors(policy: Policy) -> dict[str, int]:
    """Zone processes of an earlier `up` that still run: a restart starts only the others."""
    return {k: p for k, p in _recorded(policy).items() if _alive(p)}


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def up(policy_path: str | Path, timeout: float | None = None) -> dict[str, int]:
    """Start every zone process of the policy and wait until all are healthy; the pids by `zone@party`."""
    from orchestrator.runtime import RunError, Runtime

    policy = load_policy(policy_path)
    live = running(policy)
    if live:
        return live
    survivors = _survivors(policy)
    register_all()  # a kind this build has no engine for fails here, before any process starts
    for kind in sorted({ZoneKind(z.kind) for z in policy.zones.values()}):
        try:
            kinds.engine_factory(kind)
        except LookupError as e:
            raise LaunchError(str(e)) from None
    ensure_certs(policy)
    sdir = state_dir()
    sdir.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    for proc in policy.started_processes():
        key = proc.key
        logs[key] = sdir / f"{policy.name}.{key.replace('@', '.').replace('+', '.')}.log"
        if key in survivors:
            continue
        procs[key] = spawn_zone(policy_path, proc, logs[key])
    pids = survivors | {k: p.pid for k, p in procs.items()}
    rt = Runtime(policy)
    try:
        deadline = timeout or policy.transport.deadlines.startup_s
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            dead = [k for k, p in procs.items() if p.poll() is not None]
            if dead:
                raise LaunchError(f"zone {dead[0]} exited with code {procs[dead[0]].returncode}:\n"
                                  f"{_log_tail(logs[dead[0]])}")
            try:
                rt.wait_ready(timeout=2)
                break
            except RunError:
                continue
        else:
            rt.wait_ready(timeout=1)
        ensure_keys(policy)
    except (LaunchError, RunError) as e:
        # The zones that did start stay up, recorded: `hsi down` stops them and the next `hsi up` starts only the
        # others. One zone's failure never takes healthy ones down.
        _record(policy, policy_path, {k: pid for k, pid in pids.items() if _alive(pid)}, logs)
        if isinstance(e, LaunchError):
            raise
        raise LaunchError(f"{e}\n" + "\n".join(f"--- {k} log:\n{_log_tail(v)}" for k, v in logs.items())) from None
    finally:
        rt.close()
    _record(policy, policy_path, pids, logs)
    return pids


def _record(policy: Policy, policy_path: str | Path, pids: dict[str, int], logs: dict[str, Path]) -> None:
    _state_file(policy).write_text(json.dumps({"policy": str(policy_path), "policy_digest": policy.digest(),
                                               "pids": pids, "logs": {k: str(v) for k, v in logs.items()}}))


def zone_command(proc: ZoneProcess, policy_path: str | Path) -> list[str]:
    """The command line that runs one zone process of a policy (`python -m zones serve ...`)."""
    return [sys.executable, "-m", "zones", "serve", "--policy", str(policy_path), "--zone", proc.zone,
            "--party", proc.party] + (["--dealer"] if proc.dealer else [])


def spawn_zone(policy_path: str | Path, proc: ZoneProcess, log: Path,
               cwd: str | Path | None = None) -> subprocess.Popen[bytes]:
    """Start one zone process in a session of its own (so a stop reaches its workers), output appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(zone_command(proc, policy_path), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=cwd)


def exec_zones(argv: list[str]) -> NoReturn:
    """Become `python -m zones ARGV` (a zone process, or a data-plane tool such as init-token)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "zones", *argv])  # noqa: S606 - no shell: argv as given


def ensure_keys(policy: Policy) -> list[str]:
    """Create, as the key holder's admin, every CKKS key the policy's HE zones use that its tee zone lacks
    (a dev deployment's convenience; an operator runs `hsi keys create`). The keys created."""
    from hsi.policy import HeZone, TeeZone
    from hsi.transport.keyclient import KeyClient, KeyServiceError

    tees = list(policy.zones_of(TeeZone).items())
    wanted = {z.key: z for z in policy.zones_of(HeZone).values()}
    if not tees or not wanted:
        return []
    name, tee = tees[0]
    admin = f"{tee.party}/admin"
    if not any(g.principal == admin and "create" in g.operations for g in policy.keys):
        return []
    client = KeyClient(policy, name, admin)
    created = []
    try:
        have = {k.key for k in client.list() if not k.destroyed}
        for key, he in sorted(wanted.items()):
            if key not in have:
                p = he.ckks
                client.create(key, p.ring_dim, p.scale_bits, p.first_mod_bits, p.depth)
                created.append(key)
    except KeyServiceError as e:
        raise LaunchError(f"could not create the policy's CKKS keys in tee zone {name!r} as {admin}: {e}") from None
    finally:
        client.close()
    return created


def _stop(pids: dict[str, int], grace: float = 5.0) -> None:
    for pid in pids.values():
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
    end = time.monotonic() + grace
    for pid in pids.values():
        while _alive(pid) and time.monotonic() < end:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


def down(policy_path: str | Path) -> list[str]:
    """Stop the zones `up` started for the policy; the `zone@party` names stopped."""
    policy = load_policy(policy_path)
    f = _state_file(policy)
    if not f.is_file():
        return []
    pids = {k: int(v) for k, v in json.loads(f.read_text())["pids"].items()}
    _stop(pids)
    f.unlink(missing_ok=True)
    return sorted(pids)


def on_this_host(policy: Policy) -> bool:
    """Whether every party of the policy is at a loopback address: one machine runs all its zones."""
    def loopback(address: str) -> bool:
        try:
            return address == "localhost" or ipaddress.ip_address(address).is_loopback
        except ValueError:  # a host name
            return False
    return all(loopback(p.address) for p in policy.parties.values())


@contextlib.contextmanager
def zones_up(policy_path: str | Path) -> Iterator[bool]:
    """Use the policy's running zones, or start them for the block and stop them after; yields True if started.

    Only a policy whose parties all run on this host is started here: under a multi-party policy each party
    starts its own zones from its bundle, and the client uses them as they are."""
    policy = load_policy(policy_path)
    if running(policy) or not on_this_host(policy):
        yield False
        return
    try:
        up(policy_path)
    except LaunchError:
        down(policy_path)  # this block started them: it leaves nothing behind
        raise
    try:
        yield True
    finally:
        down(policy_path)
