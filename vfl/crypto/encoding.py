"""Fixed-point encoding of real numbers into the Paillier plaintext ring Z_n: the one codec.

Scheme (``f`` = fractional bits, public and fixed per value kind, ``n`` = the Paillier modulus):

1. A real ``a`` with ``|a| <= bound`` becomes the signed integer ``A = round(a * 2^f)``
   (:func:`quantise`), which the caller encrypts as the residue ``A mod n``: non-negative
   values stay small, negative ones land just below ``n``.
2. Decoding lifts a decrypted residue ``x`` back to a signed integer (:func:`lift_signed`):
   ``x`` if ``x <= n // 3``, ``x - n`` if ``x >= n - n // 3``. Residues in the middle third
   can only come from a result that wrapped around ``n``; they raise :class:`OverflowDetected`
   instead of being decoded to a wrong number.
3. The signed integer is divided by its scale once, at the end (:func:`dequantise`): ``2^f``
   for encoded values and their sums, ``2^(f1 + f2)`` after one product of two encodings.

Precision and band:

- Resolution ``2^-f``; encoding rounds to nearest, so ``|Decode(Encode(a)) - a| <= 2^-(f+1)``.
- Inputs must satisfy ``|a| <= bound``; anything larger (or NaN, inf) raises
  :class:`OverflowDetected` naming the value kind and the bound (never clipped). The integers
  are Python ints, exact for any ``f``.
- A decoded value must stay below ``2^bound_bits`` (:func:`dequantise` checks), and a result
  decodes only while its signed integer stays in ``[-n/3, n/3]``.
  :mod:`vfl.protocol.fixed_point` sizes the scales of the secure layer so both hold.

Invariants (exact integer arithmetic in Z_n, as long as results stay in the band):

- ``Decode(Encode(a) + Encode(b)) = a' + b'`` where ``a', b'`` are ``a, b`` rounded to
  ``2^-f``, so the error is at most ``2^-f`` (``k * 2^-(f+1)`` for a sum of ``k`` values).
- ``Decode_2(Encode(a) * Encode(b)) = a' * b'``, so
  ``|Decode_2(Encode(a) * Encode(b)) - a * b| <= (|a| + |b|) * 2^-(f+1) + 2^-(2f+2)``;
  a sum of ``k`` such products has at most ``k`` times that error.

What the encoding leaks: nothing beyond the value itself. Unlike ``phe``'s
``EncodedNumber``, whose per-value exponent travels in the clear next to the ciphertext and
reveals the magnitude of each value, the scale ``2^f`` here is one public constant of the
job, identical for every value, so a ciphertext carries no side information.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vfl.errors import VflError


class OverflowDetected(VflError, ArithmeticError):
    """A value or a result left the band declared for it; it is never wrapped silently."""


IntArray = NDArray[np.object_]  # Python ints of any size


def quantise(x: ArrayLike, bits: int, bound: float, what: str) -> IntArray:
    """Returns ``round(x·2^bits)`` as Python ints (same shape), for ``|x| <= bound``.

    Raises:
        OverflowDetected: if any ``|x| > bound`` or ``x`` is not finite, naming ``what``.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all() or (np.abs(x) > bound).any():
        worst = float(np.nanmax(np.abs(x))) if x.size else 0.0
        raise OverflowDetected(f"{what}: |value| {worst:.3g} exceeds the declared bound {bound}")
    # Python ints from the exactly-rounded doubles: exact for any ``bits``.
    flat = [int(v) for v in np.rint(x * 2.0**bits).ravel()]
    return np.array(flat, dtype=object).reshape(x.shape)


def dequantise(ints: ArrayLike, bits: int, *, bound_bits: int, what: str) -> NDArray[np.float64]:
    """Returns ``ints / 2^bits`` as floats (exact ints divided once, at the end).

    Raises:
        OverflowDetected: if a value reaches ``2^bound_bits`` (its slot is near overflow).
    """
    limit = 1 << (bits + bound_bits)
    flat = [int(v) for v in np.asarray(ints, dtype=object).ravel()]
    if any(abs(v) >= limit for v in flat):
        raise OverflowDetected(
            f"{what}: a decoded value reached 2^{bound_bits}, the declared bound"
        )
    return np.array([v / 2**bits for v in flat], dtype=np.float64).reshape(np.shape(ints))


def lift_signed(ints: Iterable[int], n: int) -> list[int]:
    """Returns the signed ``s`` in ``[-n/3, n/3]`` with ``s = x mod n`` for residues ``x``.

    Raises:
        ValueError: if a residue is outside ``[0, n)``.
        OverflowDetected: if a residue falls in the middle third of ``Z_n`` (a result wrapped).
    """
    limit = n // 3
    out: list[int] = []
    for x in ints:
        x = int(x)
        if not 0 <= x < n:
            raise ValueError(f"residue {x} is outside [0, n)")
        if x <= limit:
            out.append(x)
        elif x >= n - limit:
            out.append(x - n)
        else:
            raise OverflowDetected(
                f"a result left the decodable band |s| <= n/3 (n of "
                f"{n.bit_length()} bits): the computation overflowed"
            )
    return out


def as_int_array(values: ArrayLike, shape: tuple[int, ...] | None = None) -> NDArray[np.object_]:
    """Returns plaintext integers as an object array of Python ints, broadcast to ``shape``.

    Args:
        values: integers of any size (int64 arrays, Python ints or object arrays of them).
        shape: target shape; a scalar is broadcast to it, any other shape must equal it.

    Raises:
        TypeError: if an entry is not an integer (floats are never truncated silently).
        ValueError: if the shape does not match.
    """
    arr = np.asarray(values)
    if arr.dtype != object and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"expected plaintext integers, got dtype {arr.dtype}")
    ints = np.empty(arr.shape, dtype=object)
    for index, x in np.ndenumerate(arr):
        if not isinstance(x, int | np.integer) or isinstance(x, bool):
            raise TypeError(f"expected plaintext integers, got {type(x).__name__}")
        ints[index] = int(x)
    if shape is None or ints.shape == shape:
        return ints
    if ints.ndim != 0:
        raise ValueError(f"plaintext of shape {ints.shape} does not match {shape}")
    return np.broadcast_to(ints, shape)
