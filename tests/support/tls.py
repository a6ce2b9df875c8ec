"""Throw-away PKI for tests: a CA, a server certificate for 127.0.0.1/localhost and client certificates.

Keys are ECDSA P-256 (generation takes about a millisecond, unlike RSA). Every file is written with mode
0644: as root, Mosquitto drops to user ``mosquitto`` before it reads its TLS files unless the config says
``user root``, and a 0600 root-owned key would then fail to load. These keys protect nothing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_CLIENT_CN = "store-1.node-1"
_VALIDITY = dt.timedelta(days=30)
_FILE_MODE = 0o644


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the PEM files made by `make_tls_material` (all in one directory)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_cn: str = DEFAULT_CLIENT_CN

    def issue_client(self, common_name: str, directory: Path | None = None) -> tuple[Path, Path]:
        """Issue one more client certificate signed by this CA; return (cert_path, key_path)."""
        directory = directory or self.ca_cert.parent
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        stem = _safe_stem(common_name)
        cert_path, key_path = directory / f"client-{stem}.crt", directory / f"client-{stem}.key"
        key = _new_key()
        cert = _leaf(common_name, key, ca_cert, ca_key, server=False)
        _write(key_path, _key_pem(key))
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path


def make_tls_material(directory: Path, *, client_cn: str = DEFAULT_CLIENT_CN) -> TlsMaterial:
    """Write ca.crt/.key, server.crt/.key (SAN 127.0.0.1, ::1, localhost) and client.crt/.key to directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kiosk-edge test CA")])
    now = _now()
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _new_key()
    server_cert = _leaf("localhost", server_key, ca_cert, ca_key, server=True)
    client_key = _new_key()
    client_cert = _leaf(client_cn, client_key, ca_cert, ca_key, server=False)

    material = TlsMaterial(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        client_cn=client_cn,
    )
    pem = serialization.Encoding.PEM
    _write(material.ca_cert, ca_cert.public_bytes(pem))
    _write(material.ca_key, _key_pem(ca_key))
    _write(material.server_cert, server_cert.public_bytes(pem))
    _write(material.server_key, _key_pem(server_key))
    _write(material.client_cert, client_cert.public_bytes(pem))
    _write(material.client_key, _key_pem(client_key))
    return material


def _leaf(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
) -> x509.Certificate:
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(_FILE_MODE)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _safe_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
