"""Development PKI for mutual TLS: one CA, a coordinator server certificate, one client per party.

Layout written by :func:`generate_dev_pki` into ``out_dir``::

    ca.pem                      self-signed CA (EC P-256), valid for ``days``
    coordinator.pem / .key      server; SAN = coordinator_host, IP 127.0.0.1, DNS localhost
    <party>.pem / <party>.key   client certificate, CN = party name, SAN = DNS <party>

Private keys are PKCS#8 PEM, unencrypted, created with mode 0600. These certificates are for pilots
on one machine or a test network; production deployments bring certificates from their own CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vfl.errors import VflError
from vfl.storage import atomic_write_bytes, ensure_dir

_PARTY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RESERVED = {"ca", "coordinator"}


@dataclass(frozen=True)
class CertFiles:
    """Paths of one PEM certificate and its private key."""

    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes]:
        """``(cert_pem, key_pem)`` as bytes."""
        return self.cert.read_bytes(), self.key.read_bytes()


@dataclass(frozen=True)
class DevPki:
    """Where :func:`generate_dev_pki` wrote everything."""

    out_dir: Path
    ca: Path
    coordinator: CertFiles
    parties: dict[str, CertFiles]

    def ca_pem(self) -> bytes:
        """The CA certificate every endpoint trusts."""
        return self.ca.read_bytes()


def generate_dev_pki(
    out_dir: str | Path,
    *,
    parties: Sequence[str],
    coordinator_host: str = "127.0.0.1",
    days: int = 365,
    services: Sequence[str] = (),
) -> DevPki:
    """Write a fresh CA, coordinator and per-party certificates into ``out_dir``.

    ``services``: parties that also get an HTTPS server certificate for ``vfl serve``'s API,
    ``<party>-https.pem`` / ``.key``, valid for ``coordinator_host`` and localhost.

    Raises:
        VflError: a party name is empty, reserved, duplicated or not a safe file name.
    """
    _check_party_names(parties)
    out = ensure_dir(out_dir, private=True)  # it holds private keys: 0700
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vfl dev CA")])
    ca_cert = _ca_certificate(ca_key, ca_name, days)
    ca_path = out / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    issuer = _Issuer(key=ca_key, cert=ca_cert, days=days)
    server_sans = _server_sans(coordinator_host)
    coordinator = _write_leaf(out, "coordinator", issuer, server_sans, server=True)
    issued = {p: _write_leaf(out, p, issuer, [x509.DNSName(p)], server=False) for p in parties}
    for name in services:
        _write_leaf(out, f"{name}-https", issuer, server_sans, server=True)
    return DevPki(out_dir=out, ca=ca_path, coordinator=coordinator, parties=issued)


def peer_name_from_cert(pem: bytes) -> str:
    """The subject common name of a PEM certificate (the party name for party certificates).

    Raises:
        VflError: the bytes are not a PEM certificate or it has no common name.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise VflError(f"not a PEM certificate ({exc}). Fix: pass the party's .pem file") from exc
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise VflError("certificate has no common name. Fix: issue it with CN = party name")
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


def _check_party_names(parties: Sequence[str]) -> None:
    if len(set(parties)) != len(parties):
        raise VflError(f"duplicate party names in {list(parties)}. Fix: name each party once")
    for p in parties:
        if not _PARTY_NAME.match(p) or p.lower() in _RESERVED:
            raise VflError(
                f"party name '{p}' cannot be used for a certificate. Fix: use letters, digits, "
                "'_', '-' or '.', not 'ca' or 'coordinator'"
            )


@dataclass(frozen=True)
class _Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    days: int


def validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    """``builder`` valid from 5 minutes ago (clock skew) for ``days`` days."""
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(
        now + dt.timedelta(days=days)
    )


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, name: x509.Name, days: int
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return validity(builder, days).sign(key, hashes.SHA256())


def key_usage(*, ca: bool) -> x509.KeyUsage:
    """Key usage of a CA (signs certificates and CRLs) or a leaf (signs handshakes)."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _server_sans(host: str) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ]
    try:
        extra: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        extra = x509.DNSName(host)
    if extra not in sans:
        sans.append(extra)
    return sans


def _write_leaf(
    out: Path, name: str, issuer: _Issuer, sans: list[x509.GeneralName], *, server: bool
) -> CertFiles:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    ca_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    cert = validity(builder, issuer.days).sign(issuer.key, hashes.SHA256())
    files = CertFiles(cert=out / f"{name}.pem", key=out / f"{name}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.key, key)
    return files


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write_bytes(path, pem, private=True)  # 0600 from creation, whatever was there
