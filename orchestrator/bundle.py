"""Deployment bundles: everything one party needs to run its part of a policy, and nothing it must not have.

A bundle holds the CA certificate (never the CA key), the certificates and private keys of the party's own
principals only, the public policy, the list of the party's zone processes, and a start script that runs
them from the bundle. Two parties' bundles share no private key.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import yaml

from hsi.errors import HsiError
from hsi.policy import Policy, ZoneProcess, load_policy
from hsi.transport.certs import CA_CERT, cert_stem, certs_dir
from orchestrator.launcher import ensure_certs, principals


class BundleError(HsiError, ValueError):
    """A bundle that cannot be made: unknown party, missing certificate, non-empty target."""


def check_party(policy: Policy, party: str) -> None:
    """Raise BundleError naming the policy's parties unless `party` is one of them."""
    if party not in policy.parties:
        raise BundleError(f"policy {policy.name!r} has no party {party!r} (parties: {', '.join(policy.parties)})")


def party_principals(policy: Policy, party: str) -> list[str]:
    """The principals whose private keys belong to `party` (its zone processes, runtime, operators)."""
    return sorted(p for p in principals(policy) if p.partition("/")[0] == party)


def party_processes(policy: Policy, party: str) -> list[ZoneProcess]:
    """The zone processes `party` runs (an MPC dealer included, unless its enclave's process serves it)."""
    return [p for p in policy.started_processes() if p.party == party]


def party_cert_files(policy: Policy, party: str, pki: Path | None = None) -> dict[str, Path]:
    """File name -> path of what `party` may hold from the PKI: the CA certificate and its own principals' keys.

    Missing certificates are issued first in `pki` (default: the policy's certificate directory).
    """
    src = pki or certs_dir(policy)
    ensure_certs(policy, src)
    files = {CA_CERT: src / CA_CERT}
    for principal in party_principals(policy, party):
        for suffix in (".pem", ".key"):
            name = f"{cert_stem(principal)}{suffix}"
            if not (src / name).is_file():
                raise BundleError(f"no certificate for {principal} in {src}")
            files[name] = src / name
    return files


HTTP_PORT = 8080  # the client's OpenAI-compatible HTTP API in a container (compose, k8s)


def serve_command(policy_file: str) -> list[str]:
    """The client's `hsi serve` in a container: the runtime, and the HTTP API on HTTP_PORT on every interface
    (its /v1/* then require HSI_API_KEY as bearer token)."""
    return ["hsi", "serve", "--policy", policy_file, "--http-port", str(HTTP_PORT), "--http-host", "0.0.0.0"]


def policy_text_with_certs_dir(policy_path: str | Path, directory: str) -> str:
    """The policy file's YAML with its certificate directory pointing at `directory`."""
    data = yaml.safe_load(Path(policy_path).read_text())
    data.setdefault("transport", {}).setdefault("tls", {})["certs_dir"] = directory
    return str(yaml.safe_dump(data, sort_keys=False))


_START = """#!/usr/bin/env bash
# Start the zone processes of party {party} for policy {name}; stop them all on exit or signal.
set -euo pipefail
cd "$(dirname "$0")"
export HSI_CERTS_DIR="$PWD/certs" HSI_STATE_DIR="$PWD/run" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
HSI="${{HSI:-hsi}}"
mkdir -p run
pids=()
trap 'kill "${{pids[@]}}" 2>/dev/null; wait' EXIT INT TERM
{commands}
wait -n
"""


def make_bundle(policy_path: str | Path, party: str, out: str | Path, pki: Path | None = None) -> dict[str, object]:
    """Write party `party`'s bundle of the policy to `out`; a manifest of what it holds.

    Certificates come from `pki` (default: the policy's certificate directory), issued there if missing.
    """
    policy = load_policy(policy_path)
    check_party(policy, party)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} is not empty; a bundle goes to a new directory")
    certs = out / "certs"
    certs.mkdir(parents=True)
    for name, path in party_cert_files(policy, party, pki).items():
        shutil.copy(path, certs / name)
        if name.endswith(".key"):
            (certs / name).chmod(0o600)
    keys = party_principals(policy, party)
    (out / "policy.yaml").write_text(policy_text_with_certs_dir(policy_path, "certs"))
    procs = party_processes(policy, party)
    commands = "\n".join(
        f'"$HSI" zone serve --policy policy.yaml --zone {p.zone} --party {p.party}{" --dealer" if p.dealer else ""} '
        f'> run/{p.key.replace("@", ".").replace("+", ".")}.log 2>&1 & pids+=($!)' for p in procs)
    start = out / "start.sh"
    start.write_text(_START.format(party=party, name=policy.name, commands=commands or "true"))
    start.chmod(start.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    manifest: dict[str, object] = {
        "policy": policy.name, "policy_digest": policy.digest(), "party": party, "principals": keys,
        "processes": [{"zone": p.zone, "address": p.address, "dealer": p.dealer} for p in procs],
        "runs_client": policy.client == party,
    }
    (out / "bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
