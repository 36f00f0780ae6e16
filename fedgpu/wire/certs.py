"""A small certificate authority: a CA and the aggregator's server certificate, as PEM files.

For the demo (a throwaway CA in its temp folder) and for operators without a public CA
(``fedgpu certs``). Nodes and drivers trust the CA, not the leaf, so a new server certificate
signed by the same CA needs no change on any node (see docs/tls.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedgpu.errors import ConfigError

CA_DAYS = 3650      # the CA lives long: every node holds it
SERVER_DAYS = 397   # the leaf is rotated; 397 days is the longest public CAs issue


@dataclass(frozen=True)
class CertFiles:
    """Where ``write_certs`` put things. ``ca`` goes to every node and driver; the rest stays on the aggregator."""

    ca: Path
    ca_key: Path
    cert: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(name: str = "fedgpu CA", days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """A self-signed CA that may sign server certificates only (path length 0). Returns (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def make_server_cert(ca_cert_pem: bytes, ca_key_pem: bytes, hosts: list[str], days: int = SERVER_DAYS) -> tuple[bytes, bytes]:
    """A server certificate for ``hosts`` (names and IP addresses, as SubjectAlternativeNames), signed by the CA."""
    if not hosts:
        raise ConfigError("a server certificate needs at least one host name or IP address (--host)")
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the CA certificate or key is not an unencrypted PEM file: {exc}") from exc
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return _cert_pem(cert), _key_pem(key)


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_certs(folder: Path, hosts: list[str]) -> CertFiles:
    """Write ca.pem, ca.key, server.pem and server.key into ``folder``; keys owner-only.

    A CA already in the folder is kept, and only a new server certificate is issued: that is a
    leaf rotation, which nodes (trusting ca.pem) do not notice.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = CertFiles(ca=folder / "ca.pem", ca_key=folder / "ca.key", cert=folder / "server.pem", key=folder / "server.key")
    if files.ca.exists() != files.ca_key.exists():
        raise ConfigError(f"{folder} holds only one of ca.pem and ca.key; put both back or remove the other")
    if files.ca.exists():
        ca_cert, ca_key = files.ca.read_bytes(), files.ca_key.read_bytes()
    else:
        ca_cert, ca_key = make_ca()
        _write(files.ca_key, ca_key, private=True)
        _write(files.ca, ca_cert, private=False)
    cert, key = make_server_cert(ca_cert, ca_key, hosts)
    _write(files.key, key, private=True)
    _write(files.cert, cert, private=False)
    return files


__all__ = [
    "CA_DAYS",
    "CertFiles",
    "SERVER_DAYS",
    "make_ca",
    "make_server_cert",
    "write_certs",
]
