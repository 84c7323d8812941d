"""Certificates for etcd's client TLS: a CA, a serving certificate for the members and a
client certificate for the API servers (``--etcd-cafile/--etcd-certfile/--etcd-keyfile``).

etcd's serving certificate carries both the serverAuth and the clientAuth usage: the
JSON gateway inside each member dials the member's own gRPC port with it, and with
``--client-cert-auth`` a certificate without clientAuth is refused there."""

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

VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class EtcdPki:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def ensure_etcd_pki(directory: Path, hosts: list[str], client_cn: str = "skiff-apiserver-etcd-client") -> EtcdPki:
    """Create what is missing of the CA, the members' serving certificate (for ``hosts``:
    names or IP addresses) and the client certificate. Existing files are kept."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = EtcdPki(directory / "etcd-ca.crt", directory / "etcd-ca.key", directory / "etcd-server.crt",
                  directory / "etcd-server.key", directory / "etcd-client.crt", directory / "etcd-client.key")
    if not pki.ca_cert.exists() or not pki.ca_key.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skiff-etcd-ca")])
        usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False)
        cert = (_builder(name, name, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(usage, critical=True)
                .sign(key, hashes.SHA256()))
        _write(pki.ca_key, _key_pem(key), private=True)
        _write(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
        pki.server_cert.unlink(missing_ok=True)
        pki.client_cert.unlink(missing_ok=True)
    if not pki.server_cert.exists():
        _issue(pki, pki.server_cert, pki.server_key, "skiff-etcd",
               [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], hosts)
    if not pki.client_cert.exists():
        _issue(pki, pki.client_cert, pki.client_key, client_cn, [ExtendedKeyUsageOID.CLIENT_AUTH], [])
    return pki


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY))


def _issue(pki: EtcdPki, cert_path: Path, key_path: Path, cn: str, usages: list[x509.ObjectIdentifier],
           hosts: list[str]) -> None:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (_builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), ca_cert.subject, key.public_key())
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
