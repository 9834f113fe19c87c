"""Batched plaintext-matrix x ciphertext-matrix products modulo ``n^2``.

For ciphertexts ``C[j][g] = E(x_jg)`` (``d`` rows, ``g`` columns) and signed integers
``M`` (``m x d``), :func:`combine` returns ``O[i][g] = prod_j C[j][g]^(M_ij) mod n^2``, which
is ``E(sum_j M_ij * x_jg)`` by the additive homomorphism (Paillier 1999, EUROCRYPT). This is
the ``b · [[U]]`` product of SPEC §4, and per-user aggregation when ``M`` is 0/1.

1. Signs: positive and negative terms go to two accumulators, ``O = P * N^-1 mod n^2``:
   one inversion per output instead of one per term, and never a 2048-bit exponent.
2. Each base ``C[j][g]`` serves up to ``m`` outputs. When that pays, its powers are
   precomputed in a fixed-base windowed table (:class:`~vfl.crypto.randomness.FixedBaseTable`),
   so a term with an ``L``-bit coefficient costs ``ceil(L/w)`` multiplications instead of one
   ``L``-bit exponentiation; the window ``w`` minimises ``(2^w - 1) t + uses * t`` with
   ``t = ceil(L/w)``, against ``uses * (L + 1)`` for plain exponentiation.
3. Above :data:`~vfl.crypto.parallel.PARALLEL_MIN_MULTIPLICATIONS` the work goes to an
   :class:`~vfl.executor.Executor`: split by ciphertext column when there are at least
   as many columns as workers (every table is built once), else by output rows.

The result is the same integer whichever path computes it (exact arithmetic mod ``n^2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gmpy2
import numpy as np
from numpy.typing import NDArray

from vfl.crypto.parallel import split, worth_parallel
from vfl.crypto.randomness import FixedBaseTable
from vfl.executor import Executor

_MAX_WINDOW = 10


def best_window(bits: int, uses: int) -> int:
    """Returns the table window minimising total multiplications, or 0 for plain powmod."""
    best, best_cost = 0, uses * (bits + 1)
    for w in range(1, _MAX_WINDOW + 1):
        t = math.ceil(bits / w)
        cost = ((1 << w) - 1) * t + uses * t
        if cost < best_cost:
            best, best_cost = w, cost
    return best


def estimated_multiplications(coefficients: NDArray[np.object_], columns: int) -> int:
    """Rough count of modular multiplications of :func:`combine` (for the parallel threshold)."""
    bits = max((abs(int(a)).bit_length() for a in coefficients.ravel()), default=0)
    return int(coefficients.size) * columns * max(1, bits // 4)


def combine(
    bases: Sequence[Sequence[int]],
    coefficients: NDArray[np.object_],
    nsquare: int,
    *,
    executor: Executor | None = None,
) -> list[list[int]]:
    """Returns ``O[i][g] = prod_j bases[j][g]^(M[i, j]) mod n^2`` for signed integers ``M``.

    Args:
        bases: ``d`` rows of ``g`` ciphertexts, each a unit in ``(0, n^2)``.
        coefficients: ``m x d`` object array of signed Python ints.
        nsquare: the modulus ``n^2``.
        executor: optional executor; used only above the parallel threshold.

    Raises:
        ValueError: if ``coefficients`` is not ``m x d``.
    """
    d = len(bases)
    if coefficients.ndim != 2 or coefficients.shape[1] != d:
        raise ValueError(f"coefficients of shape {coefficients.shape} do not match {d} bases")
    columns = len(bases[0]) if d else 0
    ints = [list(map(int, row)) for row in bases]
    if executor is None or not worth_parallel(
        executor, estimated_multiplications(coefficients, columns)
    ):
        return _combine_rows(ints, nsquare, coefficients)
    if columns >= executor.workers:  # split bases: each table is built exactly once
        parts = split(columns, executor.workers)
        jobs = [[row[r.start : r.stop] for row in ints] for r in parts]
        done = executor.map(partial(_combine_columns, nsquare, coefficients), jobs)
        return [[c for part in done for c in part[i]] for i in range(len(coefficients))]
    work = partial(_combine_rows, ints, nsquare)
    chunks = [coefficients[r.start : r.stop] for r in split(len(coefficients), executor.workers)]
    return [row for part in executor.map(work, chunks) for row in part]


def _combine_columns(
    nsquare: int, coefficients: NDArray[np.object_], bases: list[list[int]]
) -> list[list[int]]:
    """:func:`_combine_rows` with the bases as last argument (for splitting by column)."""
    return _combine_rows(bases, nsquare, coefficients)


def _combine_rows(
    bases: list[list[int]], nsquare: int, coefficients: NDArray[np.object_]
) -> list[list[int]]:
    """Serial kernel of :func:`combine` (module-level so it pickles)."""
    m = len(coefficients)
    columns = len(bases[0]) if bases else 0
    mod = gmpy2.mpz(nsquare)
    pos = [[gmpy2.mpz(1)] * columns for _ in range(m)]
    neg = [[gmpy2.mpz(1)] * columns for _ in range(m)]
    for j, row in enumerate(bases):
        coeffs = [int(a) for a in coefficients[:, j]]
        uses = sum(1 for a in coeffs if a)
        if not uses:
            continue
        bits = max(abs(a).bit_length() for a in coeffs)
        window = best_window(bits, uses)
        for g, base in enumerate(row):
            power = _power_fn(base, mod, bits, window)
            for i, a in enumerate(coeffs):
                if a > 0:
                    pos[i][g] = pos[i][g] * power(a) % mod
                elif a < 0:
                    neg[i][g] = neg[i][g] * power(-a) % mod
    return [
        [
            int(p * gmpy2.invert(q, mod) % mod) if q != 1 else int(p)
            for p, q in zip(pr, nr, strict=True)
        ]
        for pr, nr in zip(pos, neg, strict=True)
    ]


def _power_fn(base: int, mod: Any, bits: int, window: int) -> Callable[[int], Any]:
    """Returns ``a -> base^a mod mod`` by table (``window > 0``) or by ``powmod``."""
    if window:
        return FixedBaseTable(base, int(mod), bits, window).power
    b = gmpy2.mpz(base)
    return lambda a: gmpy2.powmod(b, a, mod)
