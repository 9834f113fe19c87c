"""Group operations for ECDH-PSI on the prime-order subgroup of edwards25519, via libsodium.

Notation: ``G`` is the subgroup of edwards25519 of prime order
``L = 2^252 + 27742317777372353535851937790883648493``; points travel as their 32-byte
canonical compressed encoding, scalars as 32-byte little-endian integers in ``[1, L)``.

The PSI protocol needs exactly three operations:

- ``H(job, id)``: a hash of an identifier onto ``G`` (:func:`hash_to_point`);
- a secret scalar ``a`` drawn uniformly from ``[1, L)`` per job (:func:`random_scalar`);
- ``a·P`` for a point ``P`` in ``G`` (:func:`blind`).

Because ``G`` is cyclic, scalar multiplication commutes: ``a·(b·P) = (ab mod L)·P = b·(a·P)``.
That identity is what lets two parties compare ``a·b·H(id)`` without either one learning the
other's scalar or its non-shared ids (under the decisional Diffie-Hellman assumption in ``G``).
"""

from __future__ import annotations

import hashlib
import os

from nacl import bindings
from nacl.exceptions import CryptoError

POINT_BYTES = 32
"""Length of a compressed edwards25519 point."""

SCALAR_BYTES = 32
"""Length of a scalar mod ``L``."""

_DOMAIN = b"vfl/psi/ed25519-elligator2/v1"
_ZERO_SCALAR = bytes(SCALAR_BYTES)


def domain_tag(job_id: str) -> bytes:
    """Length-prefixed ``domain || job_id``, so no (job, id) pair can collide with another."""
    job = job_id.encode("utf-8")
    return _DOMAIN + len(job).to_bytes(4, "big") + job


def hash_to_point(id: str, job_id: str) -> bytes:
    """Return ``H(job_id, id)``, a point of the prime-order subgroup ``G``.

    ``H(job, id) = 8·Elligator2(SHA-512(tag(job) || utf8(id))[:32])`` where ``tag`` is a
    length-prefixed domain string containing ``job_id``, so the same id maps to unrelated
    points in different jobs. libsodium's ``crypto_core_ed25519_from_uniform`` applies the
    Elligator 2 map (the top bit of the 32 bytes chooses the sign of x) and multiplies by the
    cofactor 8, so the result is always in ``G``. Reversing ``H`` means inverting SHA-512.

    Args:
        id: an already normalised identifier (any Unicode string).
        job_id: the job identifier both parties share.

    Returns:
        A 32-byte compressed point of ``G``.

    Raises:
        ValueError: if libsodium refuses the input (it does not for 32-byte digests).
    """
    return hash_many([id], domain_tag(job_id))[0]


def hash_many(ids: list[str], tag: bytes) -> list[bytes]:
    """``[H(id) for id in ids]`` for a precomputed ``tag = domain_tag(job_id)``.

    Raises:
        ValueError: if libsodium refuses a digest (it does not for 32-byte inputs).
    """
    out = []
    for value in ids:
        digest = hashlib.sha512(tag + value.encode("utf-8")).digest()
        try:
            out.append(bindings.crypto_core_ed25519_from_uniform(digest[:POINT_BYTES]))
        except CryptoError as exc:
            raise ValueError(f"cannot map id to a curve point: {exc}") from exc
    return out


def random_scalar() -> bytes:
    """Return a fresh secret scalar ``a``, uniform in ``[1, L)`` up to a 2^-256 bias.

    ``a = int(r) mod L`` for 64 bytes ``r`` from the OS CSPRNG (libsodium's
    ``crypto_core_ed25519_scalar_reduce``); reducing 512 bits mod a 253-bit ``L`` leaves a
    statistical distance below 2^-259 from uniform. ``a = 0`` (probability ~2^-252) is refused
    by drawing again, because ``0·P`` is the identity and would make every id collide.

    Returns:
        A 32-byte little-endian scalar in ``[1, L)``.
    """
    while True:
        scalar: bytes = bindings.crypto_core_ed25519_scalar_reduce(os.urandom(64))
        if scalar != _ZERO_SCALAR:
            return scalar


def blind(point: bytes, scalar: bytes) -> bytes:
    """Return ``scalar·point``; for ``P`` in ``G`` and ``a`` in ``[1, L)`` this is in ``G``.

    Uses libsodium's ``crypto_scalarmult_ed25519_noclamp``: the scalar is taken as given (not
    clamped like X25519 keys), so ``blind(blind(P, a), b) == blind(blind(P, b), a)``.

    Args:
        point: 32-byte canonical encoding of a point in ``G``.
        scalar: 32-byte little-endian scalar, normally from :func:`random_scalar`.

    Returns:
        The 32-byte encoding of ``scalar·point``.

    Raises:
        ValueError: if ``point`` or ``scalar`` is not 32 bytes, if ``point`` is not a canonical
            encoding of a point of ``G`` (off-curve, small order or identity), or if the product
            is the identity (``scalar = 0 mod L``).
    """
    if len(point) != POINT_BYTES or len(scalar) != SCALAR_BYTES:
        raise ValueError(
            f"expected a {POINT_BYTES}-byte point and a {SCALAR_BYTES}-byte scalar, "
            f"got {len(point)} and {len(scalar)} bytes"
        )
    try:
        product: bytes = bindings.crypto_scalarmult_ed25519_noclamp(scalar, point)
    except CryptoError as exc:
        raise ValueError("not a valid point of the prime-order subgroup, or zero scalar") from exc
    return product


def blind_many(points: list[bytes], scalar: bytes) -> list[bytes]:
    """``[blind(P, scalar) for P in points]``.

    Raises:
        ValueError: naming the index of the first point :func:`blind` refuses.
    """
    out = []
    for index, point in enumerate(points):
        try:
            out.append(blind(point, scalar))
        except ValueError as exc:
            raise ValueError(f"point {index}: {exc}") from None
    return out


def is_valid_point(point: bytes) -> bool:
    """Return whether ``point`` is a canonical, non-small-order encoding of a point in ``G``."""
    if len(point) != POINT_BYTES:
        return False
    valid: bool = bindings.crypto_core_ed25519_is_valid_point(point)
    return valid
