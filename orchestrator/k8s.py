"""Kubernetes manifests for one party: its zone processes as Deployments and Services, a NetworkPolicy per
zone that admits only the policy's peers of that zone, its certificates as a Secret, the policy as a ConfigMap;
the client's party also runs `hsi serve` with the HTTP API.
A tee zone also gets a PersistentVolumeClaim as its working directory: the policy's relative tee paths (the HSM
token, its PIN, the sealed keys, the audit log) live there and outlive the pod.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from hsi.allow import zone_allow_table
from hsi.models.registry import load_graph
from hsi.plan import make_plan
from hsi.policy import MpcZone, Policy, TeeZone, ZoneProcess, load_policy
from orchestrator.bundle import (
    HTTP_PORT,
    check_party,
    party_cert_files,
    party_processes,
    policy_text_with_certs_dir,
    serve_command,
)

MOUNT = "/etc/hsi"
STATE = "/state"
STATE_SIZE = "1Gi"
API_KEY_SECRET = "api-key"  # the Secret hsi-<policy>-api-key (key api-key) the operator creates for the HTTP API


def _name(*parts: str) -> str:
    return "-".join(p.lower().replace("_", "-").replace(".", "-") for p in ("hsi", *parts))[:63]


def zone_peers(policy: Policy, proc: ZoneProcess) -> set[str]:
    """The parties whose processes call or connect to this zone process (its own party's runtime included)."""
    plan = make_plan(load_graph(policy.model.name), policy)
    peers = {p.partition("/")[0] for principals in zone_allow_table(policy, plan, proc.zone).values()
             for p in principals}
    z = policy.zones[proc.zone]
    if isinstance(z, MpcZone):  # the lockstep: every compute party and the dealer connect to each other
        peers |= set(z.parties) | {policy.dealer_endpoint(proc.zone)[0]}
    for mpc in policy.hosted_dealers(proc.zone):  # an enclave serving a dealer: its runtime and its mesh
        peers |= zone_peers(policy, proc._replace(zone=mpc, dealer=True, host=proc.zone))
    return peers


def render(policy_path: str | Path, party: str, image: str = "hsi:latest",
           pki: Path | None = None) -> list[dict[str, Any]]:
    """The manifests of party `party` of the policy."""
    policy = load_policy(policy_path)
    check_party(policy, party)
    files = {name: path.read_bytes() for name, path in party_cert_files(policy, party, pki).items()}
    policy_text = policy_text_with_certs_dir(policy_path, f"{MOUNT}/certs")
    labels = {"app.kubernetes.io/part-of": "hsi", "hsi/policy": _name(policy.name)[4:], "hsi/party": _name(party)[4:]}
    secret, config = _name(policy.name, party, "certs"), _name(policy.name, party, "policy")
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "labels": labels}, "type": "Opaque",
         "data": {k: base64.b64encode(v).decode() for k, v in sorted(files.items())}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": config, "labels": labels},
         "data": {"policy.yaml": policy_text}},
    ]
    for proc in party_processes(policy, party):
        name = _name(proc.zone, proc.party, *(["dealer"] if proc.dealer else []))
        port = int(proc.address.rsplit(":", 1)[1])
        sel = {**labels, "hsi/process": name[4:]}
        ports = [{"name": "grpc", "containerPort": port, "protocol": "TCP"}]
        z = policy.zones[proc.zone]
        if isinstance(z, MpcZone) and not proc.dealer and next(iter(z.parties)) == proc.party:
            ports.append({"name": "rendezvous", "containerPort": z.rendezvous_port, "protocol": "TCP"})
        for i, mpc in enumerate(policy.hosted_dealers(proc.zone)):  # `dealer: enclave`: served by this process
            dealer_port = int(policy.dealer_endpoint(mpc)[1].rsplit(":", 1)[1])
            ports.append({"name": f"dealer-{i}", "containerPort": dealer_port, "protocol": "TCP"})
        command = ["hsi", "zone", "serve", "--policy", f"{MOUNT}/policy/policy.yaml", "--zone", proc.zone,
                   "--party", proc.party] + (["--dealer"] if proc.dealer else [])
        container: dict[str, Any] = {
            "name": "zone", "image": image, "command": command, "ports": ports,
            "env": [{"name": "HSI_CERTS_DIR", "value": f"{MOUNT}/certs"}, {"name": "HF_HUB_OFFLINE", "value": "1"}],
            "readinessProbe": {"grpc": {"port": port}, "periodSeconds": 5},
            "volumeMounts": [{"name": "certs", "mountPath": f"{MOUNT}/certs", "readOnly": True},
                             {"name": "policy", "mountPath": f"{MOUNT}/policy", "readOnly": True}]}
        volumes: list[dict[str, Any]] = [{"name": "certs", "secret": {"secretName": secret, "defaultMode": 0o400}},
                                         {"name": "policy", "configMap": {"name": config}}]
        spec: dict[str, Any] = {"replicas": 1, "selector": {"matchLabels": sel}}
        pod: dict[str, Any] = {"containers": [container], "volumes": volumes}
        if isinstance(z, TeeZone):
            claim = f"{name}-state"[:63]
            out.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "labels": sel},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": STATE_SIZE}}}})
            container["workingDir"] = STATE
            container["volumeMounts"].append({"name": "state", "mountPath": STATE})
            volumes.append({"name": "state", "persistentVolumeClaim": {"claimName": claim}})
            spec["strategy"] = {"type": "Recreate"}  # one pod at a time on the ReadWriteOnce claim (and the token)
            if z.hsm.softhsm_conf:  # a dev SoftHSM token: made on the claim by the first pod, kept by the next
                init = ["hsi", "tee", "init-token", "--dir", str(Path(z.hsm.softhsm_conf).parent), "--label",
                        z.hsm.token_label]
                pod["initContainers"] = [{"name": "hsm-token", "image": image, "command": init, "workingDir": STATE,
                                          "volumeMounts": [{"name": "state", "mountPath": STATE}]}]
        spec["template"] = {"metadata": {"labels": sel}, "spec": pod}
        out.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": sel},
                    "spec": spec})
        out.append({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": sel},
            "spec": {"selector": sel, "ports": [{"name": p["name"], "port": p["containerPort"],
                                                 "targetPort": p["containerPort"], "protocol": "TCP"} for p in ports]}})
        peers = sorted(zone_peers(policy, proc))
        # the MPC mesh connects peers on ephemeral ports (mutual TLS): their rule admits every TCP port
        meshed = isinstance(z, MpcZone) or bool(policy.hosted_dealers(proc.zone))
        peer_ports = None if meshed else [{"port": port, "protocol": "TCP"}]
        rule: dict[str, Any] = {"from": [{"ipBlock": {"cidr": f"{policy.parties[p].address}/32"}} for p in peers]}
        if peer_ports:
            rule["ports"] = peer_ports
        out.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "labels": sel},
            "spec": {"podSelector": {"matchLabels": sel}, "policyTypes": ["Ingress"],
                     "ingress": [rule] if peers else []}})
    if party == policy.client:
        out += _serve(policy, labels, secret, config, image)
    return out


def _serve(policy: Policy, labels: dict[str, str], secret: str, config: str, image: str) -> list[dict[str, Any]]:
    """The client's runtime and HTTP API: a Deployment whose /v1/* require the bearer token in the Secret
    API_KEY_SECRET (made by the operator), its Service, and a NetworkPolicy admitting the API's port only."""
    name = _name(policy.name, "serve")
    sel = {**labels, "hsi/process": name[4:]}
    http = {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}
    container = {
        "name": "serve", "image": image, "command": serve_command(f"{MOUNT}/policy/policy.yaml"), "ports": [http],
        "env": [{"name": "HSI_CERTS_DIR", "value": f"{MOUNT}/certs"}, {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "HSI_API_KEY", "valueFrom": {"secretKeyRef": {"name": _name(policy.name, API_KEY_SECRET),
                                                                       "key": "api-key"}}}],
        # ready once every zone answers and a tiny private pass ran; alive while the process answers
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": HTTP_PORT}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": HTTP_PORT}, "periodSeconds": 20},
        "volumeMounts": [{"name": "certs", "mountPath": f"{MOUNT}/certs", "readOnly": True},
                         {"name": "policy", "mountPath": f"{MOUNT}/policy", "readOnly": True}]}
    pod = {"containers": [container],
           "volumes": [{"name": "certs", "secret": {"secretName": secret, "defaultMode": 0o400}},
                       {"name": "policy", "configMap": {"name": config}}]}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": sel},
         "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                  "template": {"metadata": {"labels": sel}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": sel},
         "spec": {"selector": sel, "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT,
                                              "protocol": "TCP"}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "labels": sel},
         "spec": {"podSelector": {"matchLabels": sel}, "policyTypes": ["Ingress"],
                  "ingress": [{"ports": [{"port": HTTP_PORT, "protocol": "TCP"}]}]}}]


def render_yaml(policy_path: str | Path, party: str, image: str = "hsi:latest") -> str:
    """The manifests as one multi-document YAML."""
    return yaml.safe_dump_all(render(policy_path, party, image), sort_keys=False)
