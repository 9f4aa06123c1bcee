"""Rendered Kubernetes manifests validate offline and admit only a zone's peers."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from orchestrator.k8s import render
from tests.conftest import POLICIES

K8S_VERSION = "1.30.0"


@pytest.mark.parametrize("policy,party", [("all-mpc-minilm.yaml", "owner"), ("all-mpc-minilm.yaml", "dealer"),
                                          ("plain-smollm2.yaml", "client"), ("private-minilm.yaml", "keyholder")])
def test_rendered_manifests_are_valid_and_admit_only_peers(hsi_env: Path, policy: str, party: str) -> None:
    docs = render(POLICIES / policy, party)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kinds = [d["kind"] for d in docs]
    assert kinds[:2] == ["Secret", "ConfigMap"] and kinds.count("Deployment") == kinds.count("NetworkPolicy") >= 1
    secret = docs[0]["data"]
    assert "ca.key" not in secret and "ca.pem" in secret
    assert all(k == "ca.pem" or k.startswith(f"{party}__") for k in secret), sorted(secret)
    assert b"PRIVATE KEY" in base64.b64decode(next(v for k, v in secret.items() if k.endswith(".key")))
    for np in (d for d in docs if d["kind"] == "NetworkPolicy" and not d["metadata"]["name"].endswith("-serve")):
        cidrs = {b["ipBlock"]["cidr"] for rule in np["spec"]["ingress"] for b in rule["from"]}
        assert cidrs and all(c.endswith("/32") for c in cidrs)


def test_the_client_serves_the_http_api_with_a_key_from_a_secret(hsi_env: Path) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render(POLICIES / "private-minilm.yaml", "client")}
    dep = docs[("Deployment", "hsi-private-minilm-serve")]
    c, = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"][:2] == ["hsi", "serve"] and c["command"][-4:] == ["--http-port", "8080", "--http-host",
                                                                          "0.0.0.0"]
    key = next(e for e in c["env"] if e["name"] == "HSI_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "hsi-private-minilm-api-key", "key": "api-key"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    np = docs[("NetworkPolicy", "hsi-private-minilm-serve")]
    assert np["spec"]["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]  # the API's port, nothing else
    assert ("Service", "hsi-private-minilm-serve") in docs
    assert not any(n.endswith("-serve") for _, n in {(d["kind"], d["metadata"]["name"])
                                                    for d in render(POLICIES / "private-minilm.yaml", "owner")})


def test_mpc_party_admits_its_peers_and_the_dealer_on_every_port(hsi_env: Path) -> None:
    docs = render(POLICIES / "all-mpc-minilm.yaml", "owner")
    np, = (d for d in docs if d["kind"] == "NetworkPolicy")
    rule, = np["spec"]["ingress"]
    assert "ports" not in rule  # the MPC mesh uses ephemeral ports between the parties
    dep, = (d for d in docs if d["kind"] == "Deployment")
    ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"grpc", "rendezvous"}  # rank 0 hosts the rendezvous


def test_a_tee_zone_keeps_its_token_and_sealed_keys_on_a_claim(hsi_env: Path) -> None:
    docs = render(POLICIES / "private-minilm.yaml", "keyholder")
    claim, = (d for d in docs if d["kind"] == "PersistentVolumeClaim")
    deployments = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Deployment"}
    enclave = next(spec for name, spec in deployments.items() if "enclave" in name)
    pod = enclave["template"]["spec"]
    assert {"name": "state", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in pod["volumes"]
    assert pod["containers"][0]["workingDir"] == "/state"  # where the policy's relative tee paths resolve
    assert enclave["strategy"] == {"type": "Recreate"}
    # the dev SoftHSM token is made on the claim before the enclave starts; init-token keeps an existing one
    init, = pod["initContainers"]
    assert init["command"] == ["hsi", "tee", "init-token", "--dir", ".hsi/softhsm", "--label", "hsi-tee"]
    assert init["workingDir"] == "/state" and init["volumeMounts"] == [{"name": "state", "mountPath": "/state"}]
    mpc = next(spec for name, spec in deployments.items() if "mpc" in name)
    assert "workingDir" not in mpc["template"]["spec"]["containers"][0] and "strategy" not in mpc
    assert "initContainers" not in mpc["template"]["spec"]


@pytest.mark.parametrize("kind", ["k8s", "compose"])
def test_an_unknown_party_is_named_with_the_policys_parties(kind: str) -> None:
    r = subprocess.run([str(Path(sys.executable).parent / "hsi"), "deploy", kind, "--policy",
                        str(POLICIES / "plain-minilm.yaml"), "--party", "nobody"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "policy 'plain-minilm' has no party 'nobody' (parties: client, owner)" in r.stderr
    assert "Traceback" not in r.stderr
