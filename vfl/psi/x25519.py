"""Group operations for ECDH-PSI with X25519 on Curve25519 u-coordinates (libsodium).

Notation: Curve25519 is the Montgomery curve ``E: v^2 = u^3 + A·u^2 + u`` over ``F_p``,
``p = 2^255 - 19``, ``A = 486662``; ``#E = 8·L`` with ``L`` the prime
``2^252 + 27742317777372353535851937790883648493``; its quadratic twist ``E'`` has order
``4·L'`` with ``L'`` prime. Values travel as 32-byte little-endian ``u`` in ``[0, p)``.

- ``H(job, id) = Elligator2(r)``, ``r = (SHA-512(tag(job) || utf8(id))[:32] mod 2^255) mod p``
  (:func:`hash_to_point`):
  the Elligator 2 map (Bernstein, Hamburg, Krasnova, Lange, CCS 2013) with non-square ``2``:
  ``u1 = -A / (1 + 2r^2)``; ``u = u1`` if ``f(u1) = u1^3 + A·u1^2 + u1`` is a square in
  ``F_p``, else ``u = -A - u1``. Exactly one of the two is the u of a point of ``E`` (``2`` is
  a non-square because ``p = 5 mod 8``), so every hashed id lies on the curve, never on the
  twist. Hashing straight to an arbitrary 32-byte ``u`` would also be safe for the scalars
  (Curve25519 is twist-secure: ``L'`` is prime, so a twist point leaks nothing about the
  scalar beyond its value mod the cofactor 4, which clamping fixes), but it would show
  the receiver, through a Legendre symbol, whether each of the peer's hashed ids fell on the
  curve or the twist: a count of them per set, which is information about the peer's ids.
  One Elligator 2 map is an *encoding* in the sense of RFC 9380 (about half the points are
  reachable, not uniformly); the PSI needs only that nobody knows a discrete log of ``H(id)``
  or a relation between two of them, which a SHA-512 input gives. The ed25519 backend uses
  the same single-map encoding (libsodium's ``crypto_core_ed25519_from_uniform``).
- ``a`` is 32 fresh random bytes per job (:func:`random_scalar`); X25519 clamps it to
  ``k(a) = 2^254 + 8·m`` with ``m`` uniform in ``[0, 2^251)``.
- ``blind(u, a) = X25519(a, u) = u([k(a)]·Q)`` for either point ``Q = (u, ±v)``
  (:func:`blind`; RFC 7748), via libsodium's ``crypto_scalarmult``.

Commutativity: ``k(a)·(k(b)·Q) = k(a)·k(b)·Q = k(b)·(k(a)·Q)`` and the u-coordinate of
``±R`` is the same, so ``X25519(a, X25519(b, u)) = X25519(b, X25519(a, u))``. Because every
``k(a)`` is a multiple of the cofactor 8, one blinding moves ``H(id)`` into the subgroup of
order ``L`` (the cofactor is cleared), where the DDH assumption makes ``k(a)·H(id)`` look
random to anyone without ``a``. Two ids collide after blinding only if their ``H`` differ by
sign and a point of order 8, which for hash outputs has probability about ``2^-250`` per
pair. libsodium returns an error when the product is the
identity (``u`` of small order): for hashed ids that has probability about ``2^-250``, for a
peer's value it means a malformed input; :func:`blind` raises ``ValueError`` either way.
"""

from __future__ import annotations

import hashlib
import os

import gmpy2
from nacl._sodium import ffi, lib

POINT_BYTES = 32
"""Length of an encoded u-coordinate."""

SCALAR_BYTES = 32
"""Length of an X25519 scalar (clamped by X25519 itself)."""

P = 2**255 - 19
A = 486662
_P = gmpy2.mpz(P)
_MASK = (1 << 255) - 1
_DOMAIN = b"vfl/psi/x25519-elligator2/v1"
# u of the points of order 1, 2, 4 and 8 on E (libsodium's blocklist, reduced mod p)
_SMALL_ORDER = frozenset(
    {
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        P - 1,
    }
)


def domain_tag(job_id: str) -> bytes:
    """Length-prefixed ``domain || job_id``, so no (job, id) pair can collide with another."""
    job = job_id.encode("utf-8")
    return _DOMAIN + len(job).to_bytes(4, "big") + job


def elligator2(r: int) -> int:
    """Return the u-coordinate ``Elligator2(r)`` of a point of ``E``, for ``r`` in ``[0, p)``.

    ``u1 = -A / (1 + 2r^2)``; ``u = u1`` if ``f(u1)`` is a square mod ``p``, else ``-A - u1``
    (the denominator never vanishes: ``-1/2`` is a non-square mod ``p``).
    """
    rr = gmpy2.mpz(r)
    u = gmpy2.f_mod(-A * gmpy2.invert(2 * rr * rr + 1, _P), _P)
    if gmpy2.legendre(u * (u * (u + A) + 1), _P) == -1:
        u = gmpy2.f_mod(-A - u, _P)
    return int(u)


def hash_to_point(id: str, job_id: str) -> bytes:
    """Return ``H(job_id, id)``, the 32-byte u-coordinate of a point of Curve25519.

    Args:
        id: an already normalised identifier (any Unicode string).
        job_id: the job identifier both parties share.
    """
    return hash_many([id], domain_tag(job_id))[0]


def hash_many(ids: list[str], tag: bytes) -> list[bytes]:
    """``[H(id) for id in ids]`` for a precomputed ``tag = domain_tag(job_id)``."""
    sha512, mask = hashlib.sha512, _MASK
    out = []
    for value in ids:
        r = int.from_bytes(sha512(tag + value.encode("utf-8")).digest()[:32], "little") & mask
        out.append(elligator2(r % P).to_bytes(POINT_BYTES, "little"))
    return out


def random_scalar() -> bytes:
    """Return 32 bytes from the OS CSPRNG; X25519 clamps them to ``2^254 + 8·m``, 251 bits."""
    return os.urandom(SCALAR_BYTES)


def blind(point: bytes, scalar: bytes) -> bytes:
    """Return ``X25519(scalar, point)``; see the module docstring for the identity it obeys.

    Raises:
        ValueError: if ``point`` or ``scalar`` is not 32 bytes, or the product is the
            identity (``point`` of small order, e.g. all zero).
    """
    return blind_many([point], scalar)[0]


def blind_many(points: list[bytes], scalar: bytes) -> list[bytes]:
    """``[X25519(scalar, P) for P in points]``, one output buffer for the whole batch.

    Raises:
        ValueError: naming the index of the first point that is not 32 bytes or whose
            product is the identity, or if ``scalar`` is not 32 bytes.
    """
    if len(scalar) != SCALAR_BYTES:
        raise ValueError(f"expected a {SCALAR_BYTES}-byte scalar, got {len(scalar)} bytes")
    buf = ffi.new("unsigned char[]", POINT_BYTES)
    mult, view = lib.crypto_scalarmult, ffi.buffer(buf, POINT_BYTES)
    out = []
    for index, point in enumerate(points):
        if len(point) != POINT_BYTES or mult(buf, scalar, point) != 0:
            raise ValueError(
                f"point {index} is not a {POINT_BYTES}-byte u-coordinate of large order "
                f"(got {len(point)} bytes, or X25519 gave the identity)"
            )
        out.append(view[:])
    return out


def is_valid_point(point: bytes) -> bool:
    """Whether ``point`` is a canonical u (``< p``) of a point of ``E`` of order > 8."""
    if len(point) != POINT_BYTES:
        return False
    u = int.from_bytes(point, "little")
    if u >= P or u in _SMALL_ORDER:
        return False
    w = gmpy2.mpz(u)
    return bool(gmpy2.legendre(w * (w * (w + A) + 1), _P) == 1)
