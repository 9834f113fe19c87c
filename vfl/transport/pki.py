"""Key custody across organisations: each side makes its own TLS key, a CA role only signs.

The one-machine shortcut (:mod:`vfl.transport.certs`, ``vfl certs``) writes every private key
into one directory. Across organisations the steps are:

1. Each organisation, on its own host, runs :func:`create_request`: a fresh EC P-256 private
   key ``<name>.key`` (mode 0600, never leaves the directory) and a certificate signing request
   ``<name>.csr`` (CN = the name; SAN = ``DNS:<name>`` for a party, the given host names or IP
   addresses for the coordinator's server certificate). Only the request is sent on.
2. The CA role (the coordinator's operator or a third party both trust) runs :func:`init_ca`
   once (``ca.pem``, and ``ca.key`` at 0600 which stays with the CA), then :func:`sign_request`
   per request: the request's self-signature must verify and its CN must be the name the CA
   was told out of band; it returns ``<name>.pem`` with the client or server usage. The CA
   never sees any organisation's private key.
3. Everyone receives ``ca.pem`` and its own ``<name>.pem``. Certificates of an existing
   corporate CA work the same way: the configs take any PEM file as ``ca`` (a chain of
   several certificates is fine).
"""

from __future__ import annotations

import contextlib
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
from vfl.transport.certs import key_usage, validity

COORDINATOR = "coordinator"
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class KeyRequest:
    """What :func:`create_request` wrote: the private key (secret) and the request (public)."""

    key: Path
    request: Path


@dataclass(frozen=True)
class CaFiles:
    """The CA's certificate (given to everyone) and private key (kept by the CA)."""

    cert: Path
    key: Path


def check_name(name: str, *, what: str = "--party") -> str:
    """Return ``name`` if it is usable as a certificate CN and file name.

    Raises:
        VflError: empty, too long, or with characters other than letters, digits, ``_.-``.
    """
    if not _NAME.match(name) or name.lower() == "ca":
        raise VflError(
            f"{what} '{name}' cannot name a certificate. Fix: use 1-64 letters, digits, '_', "
            "'-' or '.', starting with a letter or digit, and not 'ca'"
        )
    return name


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_dir(path: Path) -> Path:
    """``path``, created with mode 0700 if missing (an existing directory keeps its mode).

    Raises:
        StorageError: it cannot be created (a file in the way, permission denied, ...).
    """
    if not path.exists():
        with contextlib.suppress(OSError):  # ensure_dir below reports it with the fix
            path.mkdir(mode=0o700, parents=True)
    return ensure_dir(path)


def _refuse_overwrite(*paths: Path) -> None:
    """Never replace an existing key: that would silently orphan certificates issued for it."""
    for path in paths:
        if path.exists():
            raise VflError(
                f"{path} already exists. Fix: keep it (it may already be certified), or move "
                "it away first to rotate the key (see docs/deploy.md, rotating a key)"
            )


def host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """SAN entries for ``hosts``: an IP address entry where the host parses as one, else DNS."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def create_request(out_dir: Path, name: str, *, hosts: Sequence[str] = ()) -> KeyRequest:
    """Write a new private key ``<name>.key`` (0600) and its signing request ``<name>.csr``.

    ``hosts`` (the coordinator only) are the names or addresses parties dial; a party's
    request carries ``DNS:<name>``.

    Raises:
        VflError: a bad name, a coordinator without hosts, or an existing key file.
        StorageError: the directory cannot be written.
    """
    check_name(name)
    if name == COORDINATOR and not hosts:
        raise VflError("the coordinator's request needs the address parties dial. Fix: --host")
    out = private_dir(out_dir)
    paths = KeyRequest(key=out / f"{name}.key", request=out / f"{name}.csr")
    _refuse_overwrite(paths.key, paths.request)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = host_names(hosts) if hosts else [x509.DNSName(name)]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    atomic_write_bytes(paths.key, _pem_private(key), mode=SECRET_MODE)
    atomic_write_bytes(
        paths.request, csr.public_bytes(serialization.Encoding.PEM), mode=PUBLIC_MODE
    )
    return paths


def init_ca(out_dir: Path, *, common_name: str = "vfl job CA", days: int = 730) -> CaFiles:
    """Write a self-signed CA: ``ca.pem`` (for everyone) and ``ca.key`` (0600, the CA's own).

    Raises:
        VflError: a CA already exists in ``out_dir`` (re-creating it would void every
            certificate it issued).
        StorageError: the directory cannot be written.
    """
    out = private_dir(out_dir)
    files = CaFiles(cert=out / "ca.pem", key=out / "ca.key")
    _refuse_overwrite(files.cert, files.key)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
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
    cert = validity(builder, days).sign(key, hashes.SHA256())
    atomic_write_bytes(files.key, _pem_private(key), mode=SECRET_MODE)
    atomic_write_bytes(files.cert, cert.public_bytes(serialization.Encoding.PEM), mode=PUBLIC_MODE)
    return files


def load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key from ``ca_dir/ca.pem`` and ``ca_dir/ca.key``.

    Raises:
        VflError: either file is missing or unreadable, or the key is not the CA's EC key.
    """
    cert_path, key_path = ca_dir / "ca.pem", ca_dir / "ca.key"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise VflError(
            f"cannot read the CA in {ca_dir} (ca.pem, ca.key): {exc}. Fix: run 'vfl ca init "
            f"--out {ca_dir}' once, or pass the CA directory with --ca"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise VflError(f"{key_path} is not an EC private key. Fix: use the key of 'vfl ca init'")
    return cert, key


def read_request(path: Path) -> x509.CertificateSigningRequest:
    """A PEM signing request whose self-signature verifies.

    Raises:
        VflError: unreadable, not a PEM request, or its signature does not verify.
    """
    try:
        csr = x509.load_pem_x509_csr(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise VflError(
            f"{path} is not a PEM certificate signing request ({exc}). Fix: send the .csr "
            "file written by 'vfl keys'"
        ) from exc
    if not csr.is_signature_valid:
        raise VflError(f"{path}: the request's signature does not verify. Fix: ask for a new one")
    return csr


def _request_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def sign_request(
    ca_dir: Path, request: Path, *, party: str, out: Path | None = None, days: int = 365
) -> Path:
    """Issue ``<party>.pem`` for ``request`` if its CN is ``party``; return the path.

    ``party = "coordinator"`` issues a server certificate (TLS server usage, the request's
    host names as SAN); any other name a client certificate (SAN ``DNS:<party>``). The
    certificate is written next to the request unless ``out`` is given.

    Raises:
        VflError: the CA cannot be read, the request is invalid, its CN is not ``party``, or a
            coordinator request names no host.
        StorageError: the certificate cannot be written.
    """
    check_name(party)
    ca_cert, ca_key = load_ca(ca_dir)
    csr = read_request(request)
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    if cn != party:
        raise VflError(
            f"{request} asks for a certificate for '{cn}', not for --party '{party}'. Fix: "
            "check with the organisation which name it uses, and sign only that name"
        )
    server = party == COORDINATOR
    sans = _request_sans(csr) if server else [x509.DNSName(party)]
    if not sans:
        raise VflError(f"{request} names no host. Fix: 'vfl keys --party coordinator --host H'")
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party)]))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    cert = validity(builder, days).sign(ca_key, hashes.SHA256())
    target = out if out is not None else request.with_name(f"{party}.pem")
    return atomic_write_bytes(
        target, cert.public_bytes(serialization.Encoding.PEM), mode=PUBLIC_MODE
    )
