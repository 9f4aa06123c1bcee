"""Development PKI: a CA and one certificate per principal (`party/zone`), and loading them for gRPC."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hsi.errors import HsiError
from hsi.policy import Policy

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
VALIDITY = datetime.timedelta(days=365)


class CertError(HsiError, RuntimeError):
    """Certificate material missing or unusable; the message names the file."""


def cert_stem(principal: str) -> str:
    """File stem of a principal's certificate: `party/zone` -> `party__zone`."""
    party, sep, zone = principal.partition("/")
    if not sep or not party or not zone or "/" in zone:
        raise CertError(f"principal must be <party>/<zone>, got {principal!r}")
    return f"{party}__{zone}"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def init_ca(directory: Path) -> bool:
    """Create a dev CA in `directory` unless one exists; True when created."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / CA_CERT).exists():
        if (directory / CA_KEY).exists():
            return False
        # a party's bundle: replacing its CA would cut it off from every other party
        raise CertError(f"{directory} holds a CA certificate without its key (a party's bundle), so no certificate "
                        "can be issued here; the deployment's CA holder issues them (hsi deploy bundle)")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hsi dev CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + 10 * VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / CA_KEY, _key_pem(key))
    (directory / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return True


def issue(directory: Path, principal: str, hosts: list[str]) -> bool:
    """Issue a certificate for `principal` valid as server for `hosts` and as client; False if present."""
    stem = cert_stem(principal)
    crt, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    if crt.exists() and key_path.exists():
        return False
    try:
        ca_key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
        ca = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    except FileNotFoundError as e:
        raise CertError(f"no dev CA in {directory}: run `hsi certs init` ({e.filename} missing)") from None
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for h in dict.fromkeys(hosts + ["127.0.0.1"]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, principal)]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write_private(key_path, _key_pem(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return True


@dataclass(frozen=True)
class Credentials:
    """PEM bytes of a principal's key and certificate and of the CA."""

    principal: str
    ca: bytes
    cert: bytes
    key: bytes


def load_credentials(directory: str | Path, principal: str) -> Credentials:
    """The certificate material of `principal`; CertError naming the missing file."""
    d = Path(directory)
    stem = cert_stem(principal)
    paths = [d / CA_CERT, d / f"{stem}.pem", d / f"{stem}.key"]
    for p in paths:
        if not p.is_file():
            raise CertError(f"certificate file {p} for principal {principal!r} is missing; "
                            "run `hsi certs init --policy <policy>`")
    return Credentials(principal, *(p.read_bytes() for p in paths))


def certs_dir(policy: Policy) -> Path:
    """The certificate directory: HSI_CERTS_DIR if set, else the policy's transport.tls.certs_dir."""
    return Path(os.environ.get("HSI_CERTS_DIR") or policy.transport.tls.certs_dir)
