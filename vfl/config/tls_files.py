"""Checks of the mutual-TLS files a config names, run when the config is loaded.

A wrong certificate otherwise surfaces only as a failed TLS handshake after the retries of
the transport, far from the file that caused it. Checked here, in this order, each failure a
rule error on the offending key (``ca``, ``cert`` or ``key``) with the fix:

1. ``ca`` holds one or more PEM certificates, ``cert`` the party's own PEM certificate first,
   optionally followed by the intermediate certificates of its chain (as a corporate CA
   issues them), ``key`` an unencrypted PEM private key.
2. ``key`` is the private half of the public key of ``cert``'s first certificate.
3. Every certificate of ``cert`` and the CA are valid now (``not_valid_before <= now <=
   not_valid_after``).
4. ``cert``'s own certificate is signed by a certificate in ``ca`` (the job's CA), directly
   or through the intermediates that follow it in ``cert``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from vfl.config.toml_io import rule_error

_REISSUE = "issue a new one, e.g. with 'vfl certs-dev --out DIR' for a pilot"


def check_tls_files(ca: Path, cert: Path, key: Path) -> None:
    """Raise a rule error naming ``ca``, ``cert`` or ``key`` if the three do not fit together.

    Raises:
        PydanticCustomError: (a config rule error) for the first problem found.
    """
    authorities = _certificates(ca, "ca")
    leaf, *chain = _certificates(cert, "cert")
    _check_key(key, leaf, cert)
    now = dt.datetime.now(dt.UTC)
    for member in (leaf, *chain):
        _check_validity(member, cert, "cert", now)
    for authority in authorities:
        _check_validity(authority, ca, "ca", now)
    if not _chains_to(leaf, chain, authorities):
        raise rule_error(
            f"{cert} (subject {leaf.subject.rfc4514_string()}) was not issued by the CA in "
            f"{ca} ({', '.join(a.subject.rfc4514_string() for a in authorities)})",
            "use the certificate and the CA file of the same PKI (e.g. one 'vfl certs-dev' "
            "run), or ask the job's CA to issue this party's certificate",
            "cert",
        )


def _certificates(path: Path, field: str) -> list[x509.Certificate]:
    """The PEM certificates in ``path``, at least one."""
    try:
        found = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise rule_error(
            f"{path} is not a PEM certificate ({exc})",
            "point it at a '-----BEGIN CERTIFICATE-----' file (.pem), not a key or DER file",
            field,
        ) from None
    if not found:
        raise rule_error(f"{path} holds no certificate", "point it at a .pem file", field)
    return found


def _check_key(key: Path, leaf: x509.Certificate, cert: Path) -> None:
    """The private key must load (unencrypted) and match the certificate's public key."""
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except TypeError:
        raise rule_error(
            f"{key} is encrypted with a password",
            "store the key unencrypted (PKCS#8 PEM), readable only by this party's user",
            "key",
        ) from None
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise rule_error(
            f"{key} is not a PEM private key ({exc})",
            "point it at the '-----BEGIN PRIVATE KEY-----' file issued with the certificate",
            "key",
        ) from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*raw) != leaf.public_key().public_bytes(*raw):
        raise rule_error(
            f"{key} is not the private key of the certificate {cert}",
            "use the key file issued together with that certificate",
            "key",
        )


def _check_validity(
    certificate: x509.Certificate, path: Path, field: str, now: dt.datetime
) -> None:
    """The certificate must be valid at ``now``."""
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if now < start:
        raise rule_error(
            f"{path} is not valid before {start:%Y-%m-%d %H:%M} UTC",
            "check this machine's clock, or " + _REISSUE,
            field,
        )
    if now > end:
        raise rule_error(f"{path} expired on {end:%Y-%m-%d %H:%M} UTC", _REISSUE, field)


def _chains_to(
    leaf: x509.Certificate, chain: list[x509.Certificate], authorities: list[x509.Certificate]
) -> bool:
    """True if ``leaf`` is issued by one of ``authorities``, directly or through ``chain``
    (each link issued by the next, at most ``len(chain)`` intermediates)."""
    current = leaf
    for _ in range(len(chain) + 1):
        if any(_issued_by(current, authority) for authority in authorities):
            return True
        issuers = [c for c in chain if c is not current and _issued_by(current, c)]
        if not issuers:
            return False
        current = issuers[0]
    return False


def _issued_by(leaf: x509.Certificate, authority: x509.Certificate) -> bool:
    """True if ``authority`` signed ``leaf``."""
    try:
        leaf.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
