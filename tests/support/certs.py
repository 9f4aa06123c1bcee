"""Certificates the project's tools refuse to issue (a name that is no principal), signed by the test CA."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hsi.transport.certs import CA_CERT, CA_KEY, Credentials


def signed_as(directory: Path, common_name: str) -> Credentials:
    """Client credentials whose certificate names `common_name`, signed by the CA in `directory`."""
    ca_key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    ca = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return Credentials(common_name, (directory / CA_CERT).read_bytes(), cert.public_bytes(serialization.Encoding.PEM),
                       pem)
