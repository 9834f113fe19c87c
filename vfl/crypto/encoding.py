"""Fixed-point encoding of real numbers into the Paillier plaintext ring Z_n.

Scheme (``f`` = ``frac_bits``, ``n`` = the Paillier modulus):

1. A real ``a`` with ``|a| <= bound`` becomes the signed integer ``A = round(a * 2^f)``
   (:meth:`FixedPoint.encode`), then the residue ``A mod n`` (:meth:`FixedPoint.raw_encode`):
   non-negative values stay small, negative ones land just below ``n``.
2. Decoding lifts a residue ``x`` back to a signed integer: ``x`` if ``x <= n // 3``,
   ``x - n`` if ``x >= n - n // 3``. Residues in the middle third can only come from a
   result that wrapped around ``n``; they raise :class:`OverflowDetected` instead of being
   decoded to a wrong number (:meth:`FixedPoint.raw_decode`).
3. The signed integer is divided by ``2^(f * scale_power)``: ``scale_power=1`` for encoded
   values and their sums, ``scale_power=2`` after one product of two encoded values.

Precision and band:

- Resolution ``2^-f`` (``1.5e-5`` at the default ``f = 16``); encoding rounds to nearest,
  so ``|Decode(Encode(a)) - a| <= 2^-(f+1)``.
- Inputs must satisfy ``|a| <= bound``; anything larger raises :class:`OverflowDetected`
  naming the bound (never clipped). ``bound * 2^f`` must stay below ``2^62``.
- A result decodes only while its signed integer stays in ``[-n/3, n/3]``; the constructor
  checks that one product of two in-bound values fits (``3 * (bound * 2^f)^2 < n``).

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
from dataclasses import KW_ONLY, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vfl.errors import VflError

_INT64_SAFE_BITS = 62


class OverflowDetected(VflError, ArithmeticError):
    """A value or a result left the band declared for it; it is never wrapped silently."""


class HeadroomExceeded(OverflowDetected):
    """A packed operation could overflow a slot, so it was refused before it ran."""


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point codec with ``frac_bits`` fractional bits into the ring ``Z_modulus``.

    Attributes:
        modulus: the Paillier modulus ``n`` (the ring is ``Z_n``).
        frac_bits: number of fractional bits ``f``; resolution ``2^-f``.
        bound: largest magnitude accepted by :meth:`encode` and :meth:`raw_encode`.

    Raises:
        ValueError: if ``frac_bits < 0``, ``bound`` is not positive and finite,
            ``bound * 2^f >= 2^62``, or ``modulus`` is too small for one product
            (``3 * (bound * 2^f)^2 >= modulus``).
    """

    modulus: int
    _: KW_ONLY
    frac_bits: int = 16
    bound: float = 2.0**20

    def __post_init__(self) -> None:
        if self.frac_bits < 0:
            raise ValueError(f"frac_bits must be >= 0, got {self.frac_bits}")
        if not (np.isfinite(self.bound) and self.bound > 0):
            raise ValueError(f"bound must be positive and finite, got {self.bound}")
        if self.max_int >= 2**_INT64_SAFE_BITS:
            raise ValueError(
                f"bound {self.bound} * 2^{self.frac_bits} = {self.max_int} does not fit in "
                f"2^{_INT64_SAFE_BITS}: lower the bound or frac_bits"
            )
        if 3 * self.max_int**2 >= self.modulus:
            raise ValueError(
                f"modulus of {self.modulus.bit_length()} bits is too small: one product of two "
                f"encoded values needs 3 * {self.max_int}^2 < n"
            )

    @property
    def scale(self) -> int:
        """The public scale ``2^frac_bits``."""
        return 1 << self.frac_bits

    @property
    def max_int(self) -> int:
        """Largest encoded magnitude, ``floor(bound * 2^f)``."""
        return int(self.bound * self.scale)

    @property
    def decode_limit(self) -> int:
        """Largest signed magnitude a residue may decode to: ``n // 3``."""
        return self.modulus // 3

    def encode(self, values: ArrayLike) -> NDArray[np.int64]:
        """Returns ``round(a * 2^f)`` for each ``a`` in ``values`` (same shape).

        Args:
            values: real numbers with ``|a| <= bound``.

        Raises:
            ValueError: if a value is NaN or infinite.
            OverflowDetected: if a value exceeds ``bound`` in magnitude (message names it).
        """
        arr = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"cannot encode {int(np.sum(~np.isfinite(arr)))} NaN/inf value(s)")
        too_big = np.abs(arr) > self.bound
        if np.any(too_big):
            raise OverflowDetected(
                f"{int(np.sum(too_big))} value(s) exceed the declared bound |x| <= {self.bound} "
                f"(largest {float(np.max(np.abs(arr))):.6g}); raise FixedPoint.bound or rescale"
            )
        return np.rint(arr * self.scale).astype(np.int64)

    def decode(self, ints: Iterable[int], *, scale_power: int = 1) -> NDArray[np.float64]:
        """Returns ``A / 2^(f * scale_power)`` for each signed integer ``A`` (1-D array).

        Args:
            ints: signed integers (Python or numpy), any magnitude.
            scale_power: 1 for encoded values and their sums, 2 after one product.

        Raises:
            ValueError: if ``scale_power < 1``.
        """
        if scale_power < 1:
            raise ValueError(f"scale_power must be >= 1, got {scale_power}")
        divisor = self.scale**scale_power
        return np.array([int(a) / divisor for a in ints], dtype=np.float64)

    def raw_encode(self, values: ArrayLike) -> list[int]:
        """Returns ``Encode(a) mod n`` for each ``a`` in ``values``, flattened in C order.

        Raises:
            ValueError: if a value is NaN or infinite.
            OverflowDetected: if a value exceeds ``bound`` in magnitude.
        """
        return [int(a) % self.modulus for a in self.encode(values).ravel()]

    def raw_lift(self, ints: Iterable[int]) -> list[int]:
        """Returns the signed integer ``s`` in ``[-n/3, n/3]`` with ``s = x mod n`` for each ``x``.

        Args:
            ints: residues ``0 <= x < n``.

        Raises:
            ValueError: if a residue is outside ``[0, n)``.
            OverflowDetected: if a residue falls in the middle third of ``Z_n``, i.e. the
                result it carries wrapped around ``n``.
        """
        return lift_signed(ints, self.modulus)

    def raw_decode(self, ints: Iterable[int], *, scale_power: int = 1) -> NDArray[np.float64]:
        """Returns ``Decode_p(x)`` for residues ``x``: the inverse of :meth:`raw_encode` for p=1.

        ``Decode_1(Encode(a) + Encode(b)) = a + b`` and ``Decode_2(Encode(a) * Encode(b)) ≈ a * b``
        within the errors stated in the module docstring.

        Raises:
            ValueError: if a residue is outside ``[0, n)`` or ``scale_power < 1``.
            OverflowDetected: if a residue lies in the overflow band (see :meth:`raw_lift`).
        """
        return self.decode(self.raw_lift(ints), scale_power=scale_power)


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
