"""Packed ciphertext matrices whose every operation checks slot headroom before it runs.

A :class:`PackedMatrix` is ``[[pack(X)]]``: an ``r x L`` matrix of signed integers packed
``k`` slots per plaintext with :mod:`vfl.crypto.signed_packing`
(``pack(x) = sum_i x_i 2^(w i)``), so one ciphertext operation serves ``k`` slots.
Alongside the ciphertexts it carries ``bound``, a proven upper bound on ``|x|`` for every slot:

- ``[[X]] + [[Y]]``: ``bound_X + bound_Y``; ``[[X]] + Y``: ``bound_X + max|Y|``;
- ``s * [[X]]``: ``|s| * bound_X`` (negative ``s`` inverts once, never a 2048-bit exponent);
- ``sum_j s_j [[X_j]]``: ``sum_j |s_j| bound_j``; ``M @ [[X]]``: ``max_i sum_j |M_ij| bound_X``;
- per-group row sums: ``(largest group size) * bound_X``.

Balanced-digit unpacking is exact while every slot satisfies ``|x| <= 2^(w-1) - 1`` (the
layout's :attr:`PackingLayout.capacity`), so each operation computes the new bound first and
raises :class:`~vfl.crypto.encoding.HeadroomExceeded` if it exceeds the capacity: an
operation that *could* overflow a slot is refused, it never returns a wrong number. The
bound is worst-case: it is reached when the operands sit at their bounds with matching signs.

Slot width from declared bounds (:meth:`PackingLayout.for_bounds`): values ``|x| < 2^v``,
scalars ``|s| < 2^c``, at most ``t`` summands and masks ``2^sigma`` times larger than the
result ``|sum s_j x_j| < 2^r`` with ``r = v + c + ceil(log2 t)``; a masked result is below
``2^r + 2^(r + sigma) <= 2^(r + sigma + 1)``, so ``w = r + sigma + 2`` (one more for the
sign); without a mask ``w = r + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vfl.crypto.batched import combine
from vfl.crypto.encoding import HeadroomExceeded, as_int_array, lift_signed
from vfl.crypto.paillier import EncryptedVector, PrivateKey, PublicKey, require_same_key
from vfl.crypto.pool import RPowNSource
from vfl.crypto.signed_packing import pack_rows, slots_per_plaintext, unpack_rows
from vfl.executor import Executor

IntArray = NDArray[np.object_]


@dataclass(frozen=True)
class PackingLayout:
    """``slots`` signed slots of ``slot_bits`` bits per plaintext of an ``n_bits`` modulus.

    Raises:
        ValueError: if ``slot_bits < 2`` or no slot fits the modulus.
    """

    slot_bits: int
    n_bits: int

    def __post_init__(self) -> None:
        if self.slot_bits < 2:
            raise ValueError(f"slot_bits must be >= 2, got {self.slot_bits}")
        slots_per_plaintext(self.n_bits, self.slot_bits)

    @classmethod
    def for_bounds(
        cls,
        *,
        n_bits: int,
        value_bits: int,
        summands: int = 1,
        scalar_bits: int = 1,
        sigma: int = 40,
    ) -> PackingLayout:
        """Returns the narrowest layout for ``sum_{j<t} s_j x_j + R`` (module docstring).

        Args:
            n_bits: modulus size.
            value_bits: ``|x| < 2^value_bits``.
            summands: ``t``, the most terms in a combination.
            scalar_bits: ``|s| < 2^scalar_bits`` (1 allows ``s`` in ``{-1, 0, 1}``).
            sigma: mask bits; 0 for no mask.

        Raises:
            ValueError: if a parameter is negative or zero where it cannot be, or no slot fits.
        """
        if value_bits < 0 or summands < 1 or scalar_bits < 0 or sigma < 0:
            raise ValueError(
                f"need value_bits >= 0, summands >= 1, scalar_bits >= 0, sigma >= 0; got "
                f"{value_bits}, {summands}, {scalar_bits}, {sigma}"
            )
        result_bits = value_bits + scalar_bits + (summands - 1).bit_length()
        return cls(max(2, result_bits + (sigma + 2 if sigma else 1)), n_bits)

    @property
    def slots(self) -> int:
        """Slots per plaintext ``k`` (leaves the ``n/3`` lifting margin)."""
        return slots_per_plaintext(self.n_bits, self.slot_bits)

    @property
    def capacity(self) -> int:
        """Largest slot magnitude that unpacks exactly: ``2^(w-1) - 1``."""
        return (1 << (self.slot_bits - 1)) - 1

    def groups(self, columns: int) -> int:
        """Plaintexts per row of ``columns`` slots: ``ceil(columns / k)``."""
        return max(1, math.ceil(columns / self.slots))

    def check(self, bound: int, what: str) -> int:
        """Returns ``bound`` if it fits a slot.

        Raises:
            HeadroomExceeded: naming ``what``, the bound and the capacity, if it does not.
        """
        if bound > self.capacity:
            raise HeadroomExceeded(
                f"{what}: slots could reach |x| = {bound} (~2^{math.log2(bound):.1f}) but a "
                f"{self.slot_bits}-bit slot holds only |x| <= 2^{self.slot_bits - 1} - 1; "
                "refused before computing. Fix: a layout from PackingLayout.for_bounds with the "
                "real value/scalar/summand bounds, or smaller operands"
            )
        return bound


def max_abs(values: IntArray) -> int:
    """Returns ``max |v|`` over an integer array (0 if empty)."""
    return max((abs(int(v)) for v in values.ravel()), default=0)


@dataclass(frozen=True)
class PackedMatrix:
    """``[[pack(X)]]`` for an ``rows x columns`` signed matrix ``X`` with ``|X| <= bound``.

    ``cipher`` has shape ``(rows, layout.groups(columns))``. Build one with :meth:`encrypt`
    or, for received ciphertexts, :meth:`from_vector` with the bound agreed for them.

    Raises:
        ValueError: if the cipher shape does not match ``columns`` or ``bound < 0``.
        HeadroomExceeded: if ``bound`` exceeds the layout's capacity.
    """

    layout: PackingLayout
    cipher: EncryptedVector
    columns: int
    bound: int

    def __post_init__(self) -> None:
        expected = (self.cipher.shape[0], self.layout.groups(self.columns))
        if len(self.cipher.shape) != 2 or self.cipher.shape != expected or self.bound < 0:
            raise ValueError(
                f"cipher of shape {self.cipher.shape} does not hold {self.columns} packed "
                f"columns (expected {expected}) or bound {self.bound} < 0"
            )
        self.layout.check(self.bound, "packed matrix")

    @classmethod
    def encrypt(
        cls,
        public_key: PublicKey,
        layout: PackingLayout,
        rows: ArrayLike,
        *,
        bound: int | None = None,
        pool: RPowNSource | None = None,
    ) -> PackedMatrix:
        """Returns a fresh ``[[pack(rows)]]`` for a 2-D signed integer matrix ``rows``.

        ``bound`` (default ``max|rows|``) is the declared bound carried forward; declare the
        public one (e.g. ``2^value_bits - 1``) so it reveals nothing about the data.

        Raises:
            ValueError: if ``rows`` is not 2-D.
            TypeError: if an entry is not an integer.
            HeadroomExceeded: if ``max|rows| > bound`` or ``bound`` exceeds the capacity.
        """
        ints = as_int_array(rows)
        if ints.ndim != 2:
            raise ValueError(f"a packed matrix needs 2-D rows, got shape {ints.shape}")
        actual = max_abs(ints)
        declared = actual if bound is None else bound
        if actual > declared:
            raise HeadroomExceeded(f"an entry |x| = {actual} exceeds the declared bound {bound}")
        layout.check(declared, "encrypt")
        packed = pack_rows(ints, layout.slot_bits, layout.slots)
        cipher = EncryptedVector.raw_encrypt(public_key, packed, pool=pool)
        return cls(layout, cipher, ints.shape[1], declared)

    @classmethod
    def from_vector(
        cls, layout: PackingLayout, cipher: EncryptedVector, columns: int, bound: int
    ) -> PackedMatrix:
        """Wraps received packed ciphertexts with the bound agreed for them."""
        return cls(layout, cipher, columns, bound)

    @property
    def public_key(self) -> PublicKey:
        """The key of the ciphertexts."""
        return self.cipher.public_key

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the packed matrix."""
        return self.cipher.shape[0], self.columns

    def __repr__(self) -> str:
        return f"PackedMatrix(shape={self.shape}, slot_bits={self.layout.slot_bits})"

    def _like(self, cipher: EncryptedVector, bound: int, what: str) -> PackedMatrix:
        return PackedMatrix(self.layout, cipher, self.columns, self.layout.check(bound, what))

    def _compatible(self, other: PackedMatrix) -> None:
        require_same_key(self.public_key, other.public_key)
        if other.layout != self.layout or other.shape != self.shape:
            raise ValueError(
                f"cannot combine packed {self.shape} ({self.layout}) with {other.shape} "
                f"({other.layout})"
            )

    def __add__(self, other: PackedMatrix | ArrayLike) -> PackedMatrix:
        """Returns ``[[X + Y]]`` for ``Y`` packed-encrypted or a plain ``rows x columns`` matrix.

        Raises:
            HeadroomExceeded: if ``bound_X + bound_Y`` exceeds the capacity (checked first).
            KeyMismatchError, ValueError: for another key, layout or shape.
        """
        if isinstance(other, PackedMatrix):
            self._compatible(other)
            bound = self.layout.check(self.bound + other.bound, "add packed ciphertexts")
            return self._like(self.cipher + other.cipher, bound, "add")
        plain = as_int_array(other, self.shape)
        bound = self.layout.check(self.bound + max_abs(plain), "add packed plaintext")
        packed = pack_rows(np.ascontiguousarray(plain), self.layout.slot_bits, self.layout.slots)
        return self._like(self.cipher + packed, bound, "add plaintext")

    __radd__ = __add__

    def __neg__(self) -> PackedMatrix:
        """Returns ``[[-X]]`` (one inversion per ciphertext)."""
        return self * -1

    def __sub__(self, other: PackedMatrix | ArrayLike) -> PackedMatrix:
        """Returns ``[[X - Y]]`` (bounds add, as for ``+``)."""
        if isinstance(other, PackedMatrix):
            return self + (-other)
        return self + (-as_int_array(other, self.shape))

    def __mul__(self, scalar: int) -> PackedMatrix:
        """Returns ``[[s * X]]`` for a signed integer ``s`` (every slot scaled).

        Raises:
            TypeError: if ``scalar`` is not an integer.
            HeadroomExceeded: if ``|s| * bound`` exceeds the capacity (checked first).
        """
        if not isinstance(scalar, int | np.integer) or isinstance(scalar, bool):
            raise TypeError(f"a packed matrix scales by an integer, got {type(scalar).__name__}")
        s = int(scalar)
        bound = self.layout.check(abs(s) * self.bound, f"multiply by scalar {s}")
        return self._like(self.cipher * s, bound, "scalar")

    __rmul__ = __mul__

    def __matmul__(self, other: object) -> PackedMatrix:
        raise TypeError("only plaintext @ packed-encrypted is supported (M @ [[X]])")

    def __rmatmul__(self, matrix: ArrayLike) -> PackedMatrix:
        return self.matmul(matrix)

    def matmul(self, matrix: ArrayLike, *, executor: Executor | None = None) -> PackedMatrix:
        """Returns ``[[M · X]]`` for a plain signed ``m x rows`` integer matrix ``M``.

        Row ``i`` of the result is ``sum_j M_ij [[X_j]]`` (batched, see :mod:`vfl.crypto.batched`).

        Raises:
            ValueError: if ``M`` is not ``m x rows``.
            HeadroomExceeded: if ``max_i sum_j |M_ij| * bound`` exceeds the capacity.
        """
        mat = as_int_array(matrix)
        if mat.ndim != 2 or mat.shape[1] != self.shape[0]:
            raise ValueError(f"cannot multiply a {mat.shape} matrix by packed {self.shape}")
        row_weight = max((sum(abs(int(a)) for a in row) for row in mat), default=0)
        bound = self.layout.check(row_weight * self.bound, f"matrix {mat.shape} @ packed")
        cipher = self.cipher.dot(mat, executor=executor)
        return PackedMatrix(self.layout, cipher, self.columns, bound)

    def aggregate_rows(self, group_of_row: Sequence[int], n_groups: int) -> PackedMatrix:
        """Returns ``[[S]]`` with ``S_g = sum_{i : group_of_row[i] = g} X_i`` (``n_groups`` rows).

        This is per-user aggregation: one ciphertext multiplication per row and group.

        Raises:
            ValueError: if a group id is outside ``[0, n_groups)`` or the lengths differ.
            HeadroomExceeded: if ``(largest group size) * bound`` exceeds the capacity.
        """
        if len(group_of_row) != self.shape[0] or n_groups < 0:
            raise ValueError(f"{len(group_of_row)} group ids for {self.shape[0]} rows")
        if any(not 0 <= int(g) < n_groups for g in group_of_row):
            raise ValueError(f"group ids must lie in [0, {n_groups})")
        sizes = np.bincount(np.asarray(group_of_row, dtype=np.int64), minlength=n_groups)
        bound = self.layout.check(int(sizes.max(initial=0)) * self.bound, "aggregate rows")
        nsquare, width = self.public_key.nsquare, self.cipher.shape[1]
        acc = [[1] * width for _ in range(n_groups)]
        cts = self.cipher.ciphertexts
        for i, g in enumerate(group_of_row):
            row = acc[int(g)]
            for k in range(width):
                row[k] = row[k] * cts[i * width + k] % nsquare
        cipher = EncryptedVector(self.public_key, [c for r in acc for c in r], (n_groups, width))
        return PackedMatrix(self.layout, cipher, self.columns, bound)

    def decrypt(self, private_key: PrivateKey) -> IntArray:
        """Returns the signed ``rows x columns`` slots of ``X``.

        Raises:
            KeyMismatchError: if ``private_key`` is not this matrix's key.
            OverflowDetected: if a plaintext is outside the ``n/3`` band or overflowed its slots.
        """
        residues = private_key.raw_decrypt_vector(self.cipher)
        lifted = lift_signed(residues, self.public_key.n)
        packed = np.array(lifted, dtype=object).reshape(self.cipher.shape)
        return unpack_rows(packed, self.layout.slot_bits, self.layout.slots, self.columns)

    def serialise(self, *, rerandomise: bool = True, pool: RPowNSource | None = None) -> bytes:
        """Returns the ciphertexts' wire form, re-randomised by default (see
        :meth:`EncryptedVector.serialise`); layout, columns and bound are agreed, not sent."""
        return self.cipher.serialise(rerandomise=rerandomise, pool=pool)

    @classmethod
    def deserialise(
        cls, data: bytes, public_key: PublicKey, layout: PackingLayout, columns: int, bound: int
    ) -> PackedMatrix:
        """Returns the packed matrix serialised by :meth:`serialise` with the agreed geometry.

        Raises:
            KeyMismatchError: if ``data`` was made under another key.
            ValueError: if ``data`` is malformed or does not hold ``columns`` packed columns.
            HeadroomExceeded: if ``bound`` exceeds the layout's capacity.
        """
        return cls(layout, EncryptedVector.deserialise(data, public_key), columns, bound)

    def rerandomised(self, *, pool: RPowNSource | None = None) -> PackedMatrix:
        """Returns the same matrix with fresh, unlinkable ciphertexts."""
        return PackedMatrix(
            self.layout, self.cipher.rerandomised(pool=pool), self.columns, self.bound
        )


def linear_combination(scalars: Sequence[int], matrices: Sequence[PackedMatrix]) -> PackedMatrix:
    """Returns ``[[sum_j s_j X_j]]`` for signed integer scalars and same-shape packed matrices.

    Raises:
        ValueError: if the sequences are empty or differ in length, or layouts/shapes differ.
        HeadroomExceeded: if ``sum_j |s_j| bound_j`` exceeds the capacity (checked first).
    """
    if not matrices or len(scalars) != len(matrices):
        raise ValueError(f"{len(scalars)} scalars for {len(matrices)} packed matrices")
    first = matrices[0]
    for other in matrices[1:]:
        first._compatible(other)
    layout = first.layout
    weights = [abs(int(s)) * m.bound for s, m in zip(scalars, matrices, strict=True)]
    bound = layout.check(sum(weights), "linear combination")
    bases = [m.cipher.ciphertexts for m in matrices]
    coeffs = np.array([[int(s) for s in scalars]], dtype=object)
    out = combine(bases, coeffs, first.public_key.nsquare)[0]
    cipher = EncryptedVector(first.public_key, out, first.cipher.shape)
    return PackedMatrix(layout, cipher, first.columns, bound)
