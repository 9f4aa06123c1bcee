"""The dev CA and the certificates of every principal; bad principals and missing files are named."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from hsi.transport.certs import CA_CERT, CA_KEY, CertError, cert_stem, init_ca, issue, load_credentials


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


def test_bad_principal_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="principal must be <party>/<zone>"):
        cert_stem("owner")
    with pytest.raises(CertError, match="no dev CA"):
        issue(tmp_path, "a/b", [])
    with pytest.raises(CertError, match="certificate file .*ca.pem for principal 'a/b' is missing"):
        load_credentials(tmp_path, "a/b")
