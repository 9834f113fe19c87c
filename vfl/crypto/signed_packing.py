"""Signed slot packing: k signed integers per Paillier plaintext, with no bias.

Packing ``x_0 .. x_{k-1}`` into one integer:

    P(x) = sum_i x_i * 2^(w*i)            (w = slot width in bits)

``P`` is linear over the integers: ``P(x) + P(y) = P(x + y)`` and ``c * P(x) = P(c * x)`` for
any signed integer ``c``. Paillier evaluates exactly these operations modulo ``n``, so a
packed ciphertext supports additions, plaintext additions and multiplication by signed
scalars, slot-wise, with one operation for ``k`` slots.

Unpacking reads balanced base-``2^w`` digits: ``x_0 = ((P + 2^(w-1)) mod 2^w) - 2^(w-1)``,
then ``P <- (P - x_0) / 2^w``, and so on. It is exact when **the final** slot values satisfy
``|x_i| < 2^(w-1)``; intermediate values may be anything, because only the final integer is
decoded. After decryption the packed plaintext must be lifted to a signed integer, which
needs ``|P| < n/3``: :func:`slots_per_plaintext` leaves that margin.

Slot widths must be sized from declared bounds on the final values, so that no slot can
overflow (a carry out of slot ``i`` would silently change slot ``i+1``);
:mod:`vfl.protocol.secure_layer` does so and checks the bounds when it quantises. An overflow of
the last slot leaves a remainder after ``k`` digits and raises
:class:`~vfl.crypto.encoding.OverflowDetected`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from vfl.crypto.encoding import OverflowDetected

_MARGIN_BITS = 4  # keeps |P| below n/3 with room for the sign


def slots_per_plaintext(n_bits: int, slot_bits: int) -> int:
    """Largest ``k`` with ``k * slot_bits + margin < n_bits``.

    Raises:
        ValueError: if not even one slot fits.
    """
    k = (n_bits - _MARGIN_BITS) // slot_bits
    if k < 1:
        raise ValueError(f"a {slot_bits}-bit slot does not fit a {n_bits}-bit modulus")
    return k


def pack_rows(rows: NDArray[np.object_], slot_bits: int, k: int) -> NDArray[np.object_]:
    """Returns ``P`` of each run of ``k`` entries along the last axis: ``(r, L) -> (r, ceil(L/k))``.

    Entries are signed Python ints; the last group is padded with zeros.
    """
    r, length = rows.shape
    groups = -(-length // k)
    out = np.empty((r, groups), dtype=object)
    for i in range(r):
        for g in range(groups):
            out[i, g] = pack(rows[i, g * k : (g + 1) * k], slot_bits)
    return out


def pack(values: Sequence[int] | NDArray[np.object_], slot_bits: int) -> int:
    """Returns ``sum_i values[i] * 2^(slot_bits * i)``."""
    acc = 0
    for v in reversed(list(values)):
        acc = (acc << slot_bits) + int(v)
    return acc


def unpack(packed: int, slot_bits: int, k: int) -> list[int]:
    """Returns the ``k`` balanced digits of ``packed`` (the inverse of :func:`pack`).

    Raises:
        OverflowDetected: if a remainder is left after ``k`` digits (a slot overflowed).
    """
    half, full = 1 << (slot_bits - 1), 1 << slot_bits
    out = []
    x = int(packed)
    for _ in range(k):
        digit = ((x + half) % full) - half
        out.append(digit)
        x = (x - digit) >> slot_bits
    if x != 0:
        raise OverflowDetected(f"packed value overflowed its {k} slots of {slot_bits} bits")
    return out


def unpack_rows(
    packed: NDArray[np.object_], slot_bits: int, k: int, length: int
) -> NDArray[np.object_]:
    """Inverse of :func:`pack_rows`: ``(r, groups) -> (r, length)``."""
    r, groups = packed.shape
    out = np.empty((r, groups * k), dtype=object)
    for i in range(r):
        for g in range(groups):
            out[i, g * k : (g + 1) * k] = unpack(int(packed[i, g]), slot_bits, k)
    return out[:, :length]
