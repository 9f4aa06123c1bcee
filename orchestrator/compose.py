"""A docker compose file per party: one service per zone process of the party, run from its bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.bundle import party_processes
from orchestrator.policy import load_policy


def render(policy_path: str | Path, party: str, image: str = "hsi:latest", bundle: str = "./bundle") -> dict[str, Any]:
    """The compose document of party `party`: its zone processes on the host network, the bundle mounted."""
    policy = load_policy(policy_path)
    if party not in policy.parties:
        raise ValueError(f"policy {policy.name!r} has no party {party!r}")
    services: dict[str, Any] = {}
    for proc in party_processes(policy, party):
        name = proc.key.replace("@", "-").replace("+", "-")
        services[name] = {
            "image": image,
            # the policy's addresses are the hosts' own: MPC parties also connect on gloo's ephemeral ports
            "network_mode": "host",
            "restart": "unless-stopped",  # a restarted zone rejoins; the next session uses it
            "volumes": [f"{bundle}:/bundle:ro", f"{name}-run:/bundle/run"],
            "command": ["hsi", "zone", "serve", "--policy", "/bundle/policy.yaml", "--zone", proc.zone, "--party",
                        proc.party] + (["--dealer"] if proc.dealer else []),
        }
    return {"name": f"hsi-{policy.name}-{party}", "services": services,
            "volumes": {f"{n}-run": {} for n in services}}


def render_yaml(policy_path: str | Path, party: str, image: str = "hsi:latest") -> str:
    """The compose file as YAML."""
    return yaml.safe_dump(render(policy_path, party, image), sort_keys=False)
