"""Dev PKI and the zones' per-method allow tables."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from orchestrator.launcher import ensure_certs, on_this_host, principals
from orchestrator.models.registry import load_graph
from orchestrator.planner import make_plan
from orchestrator.policy import load_policy
from tests.conftest import POLICIES
from zones.common.certs import CA_CERT, CA_KEY, CertError, cert_stem, init_ca, issue, load_credentials
from zones.common.zone_service import zone_allow_table


def test_ca_and_certificates(tmp_path: Path) -> None:
    assert init_ca(tmp_path) and not init_ca(tmp_path)
    assert issue(tmp_path, "owner/he", ["10.0.0.2", "owner.example"])
    assert not issue(tmp_path, "owner/he", ["10.0.0.2"])  # idempotent
    cert = x509.load_pem_x509_certificate((tmp_path / "owner__he.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=owner/he"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "owner.example" in sans.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE((tmp_path / "owner__he.key").stat().st_mode) == 0o600
    creds = load_credentials(tmp_path, "owner/he")
    assert creds.principal == "owner/he" and b"BEGIN CERTIFICATE" in creds.ca


def test_a_bundle_keeps_its_ca(tmp_path: Path) -> None:
    """A directory with the CA certificate but not its key (a party's bundle) is never given a new CA."""
    init_ca(tmp_path)
    (tmp_path / CA_KEY).unlink()
    before = (tmp_path / CA_CERT).read_bytes()
    with pytest.raises(CertError, match="CA certificate without its key .*party's bundle"):
        init_ca(tmp_path)
    assert (tmp_path / CA_CERT).read_bytes() == before and not (tmp_path / CA_KEY).exists()


def test_only_a_policy_on_this_host_is_started_here() -> None:
    """The client of a multi-party policy uses the parties' zones; it never starts them itself."""
    local = load_policy(POLICIES / "plain-minilm.yaml")
    assert on_this_host(local)
    data = local.model_dump()
    data["parties"]["owner"]["address"] = "10.77.0.2"
    assert not on_this_host(type(local).model_validate(data))


def test_bad_principal_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="principal must be <party>/<zone>"):
        cert_stem("owner")
    with pytest.raises(CertError, match="no dev CA"):
        issue(tmp_path, "a/b", [])
    with pytest.raises(CertError, match="certificate file .*ca.pem for principal 'a/b' is missing"):
        load_credentials(tmp_path, "a/b")


def test_policy_principals_get_certificates(tmp_path: Path) -> None:
    policy = load_policy(POLICIES / "plain-minilm.yaml")
    assert set(principals(policy)) == {"client/runtime", "client/embed-client", "owner/plain-owner"}
    assert sorted(ensure_certs(policy, tmp_path)) == sorted(principals(policy))
    assert ensure_certs(policy, tmp_path) == []


def test_zone_allow_tables_are_least_privilege() -> None:
    policy = load_policy(POLICIES / "plain-minilm.yaml")
    plan = make_plan(load_graph("minilm-l6"), policy)
    owner = zone_allow_table(policy, plan, "plain-owner")
    assert owner["/hsi.v1.Zone/PushTensor"] == {"client/embed-client"}
    assert owner["/hsi.v1.Zone/RunStage"] == {"client/runtime"}
    client = zone_allow_table(policy, plan, "embed-client")
    assert client["/hsi.v1.Zone/PushTensor"] == {"client/runtime"}
