"""The two PSI groups behind one interface, and the chunk-level work an executor runs.

Choice: :attr:`~vfl.config.job.PsiCurve.X25519` is the default (:mod:`vfl.psi.x25519`: Elligator 2
hashing onto Curve25519, X25519 blinding with clamped scalars, which clears the cofactor; about
31 µs per blinding here). :attr:`~vfl.config.job.PsiCurve.ED25519` (:mod:`vfl.psi.ed25519`:
prime-order subgroup of edwards25519, unclamped scalars mod ``L``, about 65 µs per blinding)
stays selectable. Both give ``blind(blind(H(id), a), b) == blind(blind(H(id), b), a)`` and
pseudo-random blinded values under DDH in a group of prime order about ``2^252``. The curve is
part of the PSI handshake, so both parties always use the same one.

The worker functions (:func:`hash_and_blind`, :func:`reblind`) take and return whole chunks as
one concatenated ``bytes`` (``32·k`` bytes for ``k`` points), so one executor call amortises
its pickling and dispatch over thousands of curve operations.
"""

from __future__ import annotations

from types import ModuleType

from vfl.config.job import PsiCurve
from vfl.psi import ed25519, x25519

POINT_BYTES = 32
"""Length of one group element on the wire, for both curves."""

_GROUPS: dict[PsiCurve, ModuleType] = {PsiCurve.X25519: x25519, PsiCurve.ED25519: ed25519}


def random_scalar(curve: PsiCurve) -> bytes:
    """A fresh secret scalar of ``curve`` from the OS CSPRNG (see the curve's module)."""
    scalar: bytes = _GROUPS[curve].random_scalar()
    return scalar


def hash_to_point(curve: PsiCurve, id: str, job_id: str) -> bytes:
    """``H(job_id, id)`` on ``curve``: 32 bytes of a group element, job-separated."""
    point: bytes = _GROUPS[curve].hash_to_point(id, job_id)
    return point


def blind(curve: PsiCurve, point: bytes, scalar: bytes) -> bytes:
    """``scalar·point`` on ``curve``.

    Raises:
        ValueError: if the point is malformed or the product is the identity.
    """
    product: bytes = _GROUPS[curve].blind(point, scalar)
    return product


def is_valid_point(curve: PsiCurve, point: bytes) -> bool:
    """Whether ``point`` is a canonical group element of large order on ``curve``."""
    valid: bool = _GROUPS[curve].is_valid_point(point)
    return valid


def split(blob: bytes) -> list[bytes]:
    """The 32-byte elements of a concatenated chunk."""
    return [blob[i : i + POINT_BYTES] for i in range(0, len(blob), POINT_BYTES)]


def hash_and_blind(curve: PsiCurve, job_id: str, ids: list[str], scalar: bytes) -> bytes:
    """Steps 1-2 for one chunk: ``a·H(job_id, id)`` for each (trusted, own) id, concatenated.

    Raises:
        ValueError: if an id maps to a point of small order (probability about ``2^-250``).
    """
    group = _GROUPS[curve]
    points: list[bytes] = group.blind_many(group.hash_many(ids, group.domain_tag(job_id)), scalar)
    return b"".join(points)


def reblind(curve: PsiCurve, blob: bytes, scalar: bytes) -> bytes:
    """Step 3 for one chunk of the peer's points: ``a·P`` for each, concatenated, in order.

    Peer points are checked first: canonical, on the curve (not the twist) and of large order
    for X25519; libsodium's own checks (canonical, in the prime-order subgroup) for ed25519.

    Raises:
        ValueError: naming the index in the chunk of the first invalid point.
    """
    group = _GROUPS[curve]
    points = split(blob)
    if curve is PsiCurve.X25519:
        for index, point in enumerate(points):
            if not x25519.is_valid_point(point):
                raise ValueError(
                    f"point {index} is not a u-coordinate of Curve25519 of large order"
                )
    out: list[bytes] = group.blind_many(points, scalar)
    return b"".join(out)
