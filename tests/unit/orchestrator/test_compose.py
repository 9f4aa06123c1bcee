"""A party's compose file runs each of its zone processes from its bundle."""

from __future__ import annotations

from pathlib import Path

from orchestrator.compose import render as render_compose
from tests.conftest import POLICIES

K8S_VERSION = "1.30.0"


def test_compose_file_runs_each_zone_process_of_the_party_from_its_bundle(hsi_env: Path) -> None:
    doc = render_compose(POLICIES / "all-mpc-minilm.yaml", "keyholder")
    assert list(doc["services"]) == ["mpc-keyholder"]
    svc = doc["services"]["mpc-keyholder"]
    assert svc["command"][-4:] == ["--zone", "mpc", "--party", "keyholder"] and svc["network_mode"] == "host"
    assert "./bundle:/bundle:ro" in svc["volumes"]
    dealer = render_compose(POLICIES / "all-mpc-minilm.yaml", "dealer")["services"]
    assert [s["command"][-1] for s in dealer.values()] == ["--dealer"]
    client = render_compose(POLICIES / "plain-minilm.yaml", "client")["services"]
    assert client.keys() == {"embed-client-client", "serve"}
    serve = client["serve"]
    assert serve["command"][:2] == ["hsi", "serve"] and "--http-port" in serve["command"]
    assert serve["depends_on"] == ["embed-client-client"]
    assert serve["environment"]["HSI_API_KEY"].startswith("${HSI_API_KEY:?")  # compose refuses to start without it
    assert "name" not in doc  # Compose v1 rejects a top-level name; `-p` names the project


def test_compose_gives_a_tee_zone_the_partys_state_and_nothing_else_writable(hsi_env: Path) -> None:
    services = render_compose(POLICIES / "private-minilm.yaml", "keyholder")["services"]
    assert services.keys() == {"mpc-keyholder", "enclave-keyholder"}
    enclave, mpc = services["enclave-keyholder"], services["mpc-keyholder"]
    # the HSM token, PIN, sealed keys and audit log (the policy's relative paths) live in the host's ./state
    assert enclave["volumes"] == ["./bundle:/bundle:ro", "./state:/state"] and enclave["working_dir"] == "/state"
    assert mpc["volumes"] == ["./bundle:/bundle:ro"] and "working_dir" not in mpc
