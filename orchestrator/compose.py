"""A docker compose file per party: one service per zone process of the party, run from its bundle; the client's
also runs `hsi serve` with the HTTP API.

The bundle is mounted read-only at /bundle. A tee zone also gets the party's own state directory (./state, beside
the bundle) as its working directory: the policy's relative tee paths — the HSM token, its PIN, the sealed keys,
the audit log — live there on the host and outlive the container.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hsi.policy import TeeZone, load_policy
from orchestrator.bundle import HTTP_PORT, check_party, party_processes, serve_command

STATE = "/state"


def render(policy_path: str | Path, party: str, image: str = "hsi:latest", bundle: str = "./bundle",
           state: str = "./state") -> dict[str, Any]:
    """The compose document of party `party`: its zone processes on the host network, the bundle mounted."""
    policy = load_policy(policy_path)
    check_party(policy, party)
    services: dict[str, Any] = {}
    for proc in party_processes(policy, party):
        name = proc.key.replace("@", "-").replace("+", "-")
        service: dict[str, Any] = {
            "image": image,
            # the policy's addresses are the hosts' own: MPC parties also connect on the mesh's ephemeral ports
            "network_mode": "host",
            "restart": "unless-stopped",  # a restarted zone rejoins; the next session uses it
            "volumes": [f"{bundle}:/bundle:ro"],
            "command": ["hsi", "zone", "serve", "--policy", "/bundle/policy.yaml", "--zone", proc.zone, "--party",
                        proc.party] + (["--dealer"] if proc.dealer else []),
        }
        if isinstance(policy.zones[proc.zone], TeeZone):
            service["volumes"].append(f"{state}:{STATE}")
            service["working_dir"] = STATE
        services[name] = service
    if party == policy.client:  # the runtime and its HTTP API, started once the party's zones are up
        services["serve"] = {
            "image": image, "network_mode": "host", "restart": "unless-stopped",
            "volumes": [f"{bundle}:/bundle:ro"], "command": serve_command("/bundle/policy.yaml"),
            # the API listens on every interface: refuse to start it without a key
            "environment": {"HSI_API_KEY": "${HSI_API_KEY:?set HSI_API_KEY: the bearer token of the HTTP API}"},
            "depends_on": list(services),
            "healthcheck": {"test": ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen("
                                     f"'http://127.0.0.1:{HTTP_PORT}/healthz', timeout=5)"],
                            "interval": "10s", "timeout": "6s", "retries": 3}}
    # no top-level `name`: Compose v1 (docker-compose 1.29, Debian 12's) rejects it; the project is named with -p
    return {"services": services}


def project_name(policy_path: str | Path, party: str) -> str:
    """The compose project name of party `party`'s zones (`docker compose -p NAME`)."""
    return f"hsi-{load_policy(policy_path).name}-{party}"


def render_yaml(policy_path: str | Path, party: str, image: str = "hsi:latest") -> str:
    """The compose file as YAML, headed by how to start it."""
    head = (f"# Party {party}'s zones. Beside its bundle (./bundle): docker compose -p "
            f"{project_name(policy_path, party)} up -d\n")
    return head + yaml.safe_dump(render(policy_path, party, image), sort_keys=False)
