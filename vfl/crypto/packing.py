"""Packing of many signed fixed-point slots into one Paillier plaintext.

One ciphertext operation then serves a whole row: adding two packed ciphertexts adds every
slot, and raising one to a scalar multiplies every slot (Paillier 1999, EUROCRYPT, LNCS 1592,
is additively homomorphic on the whole plaintext; the slots are digits of it).

Layout (``v`` = ``value_bits``, ``h = ceil(log2(max_terms))``, ``s`` = ``sigma``):

1. Slot width ``w = v + h + s + 1`` bits: ``v`` for a value, ``h`` headroom for a sum of
   ``max_terms`` terms, ``s`` for a statistical mask ``2^s`` times larger than the value,
   and one bit for the sign (the bias below doubles the range).
2. ``k = floor((n_bits - 1) / w)`` slots per plaintext, so a packed integer is below
   ``2^(n_bits - 1) <= n`` and never wraps.
3. A slot value ``x`` must satisfy ``|x| < B`` with ``B = 2^(v + s)`` (values and masks
   alike). :meth:`SlotLayout.pack` stores the non-negative digit ``x + B`` in ``[1, 2B - 1]``,
   so ``pack(x) = sum_j (x_j + B) * 2^(w * j)``.

Supported operations on packings (all the protocol needs):

- adding packed vectors, plaintext or encrypted: ``pack(x) + pack(y)``;
- multiplying a packed vector by a non-negative integer scalar ``c``: ``c * pack(x)``;
- any combination ``sum_i c_i * pack(x_i)`` with integers ``c_i >= 0``.

Each digit of such a combination is ``sum_i c_i * x_i + T * B`` with *weight*
``T = sum_i c_i`` (a sum of ``t`` packings has bias ``t * B``; a scalar ``c`` scales the
bias by ``c``). It lies in ``[T, T * (2B - 1)]``, which fits ``w`` bits whenever
``T <= max_terms <= 2^h``: no carry crosses into the next slot, so overflow is impossible.
:meth:`SlotLayout.unpack` takes ``terms=T`` and subtracts ``T * B`` from every digit.

Not supported: negative scalars or subtraction of packings (they borrow across slots), and
adding plaintext that was not packed with the same layout. Negate a value before packing.
With fixed-point scalars the weight grows fast: ``d`` products with scalars below ``2^q``
have weight up to ``d * 2^q``, so ``max_terms`` must be at least that. A mask ``R`` with
``|R| < B`` is packed like any value and adds 1 to the weight.

Overflow is impossible within these preconditions and detected outside them:
:meth:`SlotLayout.pack` refuses slot values outside ``(-B, B)``, and
:meth:`SlotLayout.unpack` refuses a weight above ``max_terms``, digits outside
``[T, T * (2B - 1)]`` and set bits above the last slot, raising :class:`OverflowDetected`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vfl.crypto.encoding import OverflowDetected


@dataclass(frozen=True)
class SlotLayout:
    """Geometry of signed slots in one plaintext of an ``n_bits``-bit Paillier modulus.

    Attributes:
        value_bits: bits of a slot's value magnitude before masking (``>= 1``).
        max_terms: largest weight ``T = sum c_i`` of a combination (``>= 1``).
        sigma: statistical mask bits (``>= 0``; the protocol uses 40).
        n_bits: bit length of the Paillier modulus ``n``.

    Raises:
        ValueError: if a field is out of range or one slot does not fit (message has numbers).
    """

    value_bits: int
    max_terms: int
    sigma: int
    n_bits: int

    def __post_init__(self) -> None:
        if self.value_bits < 1 or self.max_terms < 1 or self.sigma < 0:
            raise ValueError(
                f"need value_bits >= 1, max_terms >= 1, sigma >= 0; got value_bits "
                f"{self.value_bits}, max_terms {self.max_terms}, sigma {self.sigma}"
            )
        if self.slots_per_int < 1:
            raise ValueError(
                f"a slot of {self.slot_bits} bits (value_bits {self.value_bits} + headroom "
                f"{self.headroom_bits} for max_terms {self.max_terms} + sigma {self.sigma} + 1 "
                f"sign bit) does not fit a {self.n_bits}-bit modulus "
                f"(at most {self.n_bits - 1} bits per plaintext)"
            )

    @property
    def headroom_bits(self) -> int:
        """``ceil(log2(max_terms))``: bits for summing ``max_terms`` terms."""
        return (self.max_terms - 1).bit_length()

    @property
    def slot_bits(self) -> int:
        """Slot width ``w = value_bits + headroom_bits + sigma + 1``."""
        return self.value_bits + self.headroom_bits + self.sigma + 1

    @property
    def slots_per_int(self) -> int:
        """Slots per plaintext, ``floor((n_bits - 1) / w)``."""
        return max(0, (self.n_bits - 1) // self.slot_bits)

    @property
    def bias(self) -> int:
        """The offset ``B = 2^(value_bits + sigma)``; slot values satisfy ``|x| < B``."""
        return 1 << (self.value_bits + self.sigma)

    def ints_per_row(self, n_slots: int) -> int:
        """Plaintexts needed for a row of ``n_slots`` slots: ``ceil(n_slots / k)``."""
        return max(1, math.ceil(n_slots / self.slots_per_int))

    def pack(self, rows: NDArray[np.int64] | NDArray[np.object_]) -> list[int]:
        """Returns ``[pack(row chunk)]``: ``sum_j (x_j + B) * 2^(w * j)`` per chunk of ``k`` slots.

        Args:
            rows: 2-D array (``r`` x ``L``) of integers (int64 or Python ints) with
                ``|x| < B``. Row ``i`` becomes ``ints_per_row(L)`` consecutive plaintexts.

        Raises:
            ValueError: if ``rows`` is not 2-D.
            TypeError: if an entry is not an integer.
            OverflowDetected: if an entry is outside ``(-B, B)`` (names the row and column).
        """
        if rows.ndim != 2:
            raise ValueError(f"pack expects a 2-D array of rows, got shape {rows.shape}")
        k, w = self.slots_per_int, self.slot_bits
        out: list[int] = []
        for i, row in enumerate(rows):
            digits = [self._digit(x, i, j) for j, x in enumerate(row)]
            for start in range(0, max(1, len(digits)), k):
                packed = 0
                for shift, digit in enumerate(digits[start : start + k]):
                    packed |= digit << (w * shift)
                out.append(packed)
        return out

    def _digit(self, x: object, i: int, j: int) -> int:
        """Returns ``x + B`` for one slot value, checking ``|x| < B``."""
        if not isinstance(x, int | np.integer) or isinstance(x, bool | np.bool_):
            raise TypeError(f"slot ({i}, {j}) holds {type(x).__name__}, expected an integer")
        value, bias = int(x), self.bias
        if not -bias < value < bias:
            raise OverflowDetected(
                f"slot value {value} at row {i}, column {j} is outside the band "
                f"|x| < 2^{self.value_bits + self.sigma} of this layout"
            )
        return value + bias

    def unpack(self, ints: Sequence[int], n_slots: int, *, terms: int = 1) -> NDArray[np.object_]:
        """Returns the slots ``sum_i c_i * x_i`` of packed integers with weight ``T = terms``.

        Inverse of :meth:`pack` for ``terms=1``; for ``sum_i c_i * pack(x_i)`` pass
        ``terms = sum_i c_i`` (a plain sum of ``t`` packings has ``terms=t``).

        Args:
            ints: plaintexts ``0 <= P < 2^(n_bits-1)``, ``ints_per_row(n_slots)`` per row.
            n_slots: slots per row ``L`` (as given to :meth:`pack`).
            terms: weight ``0 <= T <= max_terms``.

        Returns:
            ``r`` x ``L`` object array of Python ints.

        Raises:
            ValueError: if ``terms`` or ``n_slots`` is out of range or the count of ints
                is not a multiple of ``ints_per_row(n_slots)``.
            OverflowDetected: if a digit is outside ``[T, T * (2B - 1)]`` or bits are set
                above the last slot.
        """
        if not 0 <= terms <= self.max_terms:
            raise ValueError(f"terms {terms} is outside [0, max_terms={self.max_terms}]")
        per_row = self.ints_per_row(n_slots)
        if n_slots < 0 or len(ints) % per_row:
            raise ValueError(f"{len(ints)} plaintexts do not form rows of {n_slots} slots")
        values: list[int] = []
        for index, packed in enumerate(ints):
            used = min(self.slots_per_int, n_slots - (index % per_row) * self.slots_per_int)
            values.extend(self._split(int(packed), used, terms))
        out = np.empty((len(ints) // per_row, n_slots), dtype=object)
        out.ravel()[:] = values
        return out

    def _split(self, packed: int, used: int, terms: int) -> list[int]:
        """Returns the ``used`` unbiased slot values of one packed plaintext of weight ``terms``."""
        w = self.slot_bits
        if packed < 0 or packed >> (w * used):
            raise OverflowDetected(
                f"packed plaintext has bits above its {used} slots of {w} bits: a slot overflowed"
            )
        low, high, shift = terms, terms * (2 * self.bias - 1), terms * self.bias
        mask = (1 << w) - 1
        values: list[int] = []
        for j in range(used):
            digit = (packed >> (w * j)) & mask
            if not low <= digit <= high:
                raise OverflowDetected(
                    f"slot {j} digit {digit} is outside [{low}, {high}] for weight {terms}: "
                    "a slot overflowed or terms is wrong"
                )
            values.append(digit - shift)
        return values
