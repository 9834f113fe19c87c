"""Fixed-point scales, bounds and exact integer helpers of the secret-shared layer.

The codec itself (quantise, lift, dequantise) is :mod:`vfl.crypto.encoding`; this module
states the scales and bounds the layer gives it.

Every value of the layer is a signed Python integer at a public scale (SPEC §4):

* ``B = round(b·2^f_b)`` with ``|b| < 1`` (P's tanh output), ``f_b = b_bits``;
* ``G = round(δ·2^f_g)`` with ``|δ| <= g_bound`` per user entry (δ summed over a user's rows);
* ``D = round(δ·2^f_d)`` for the embedding gradient;
* the shares ``U``, ``V`` of ``W_B`` at ``S = 2^(f_b + f_g)``, so ``Bᵀ·G`` is the weight
  gradient ``bᵀδ`` already at the shares' scale and no shared value is ever truncated.

Decoded results and their slots (``w`` = ``slot_bits``, balanced digits hold ``|x| < 2^(w-1)``):

* ``z_B = B·(U+V)`` at ``2^(2f_b + f_g)``; ``dL/db = D·(U+V)ᵀ`` at ``2^(f_d + f_b + f_g)``;
  both with ``|value| < 2^value_bits``, which the decoding party checks (a value near the
  bound raises :class:`OverflowDetected` long before a slot could overflow, since weights
  move by bounded steps);
* the masked update ``Bᵀ·G - R`` with ``|R| <= 2^mask_bits``: ``mask_bits`` is ``sigma``
  bits above the largest possible ``|Bᵀ·G|`` (``max_users · 2^f_b · g_bound · 2^f_g``).

Fixed-point error of one step: ``|Δz_B| <= d·2^-(f_b+1)·max|W_B| + 2^-(f_b+1)`` from the
rounding of ``b`` (``U + V`` itself is exact); ``|ΔW_B| <= 2^-(f_b+1)·Σ|δ|`` per step from
rounding ``b`` and ``m·2^-(f_g+1)`` from rounding ``δ``, plus ``2^-(f_b+f_g)`` per share and
step from the optimiser's rational rounding.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from vfl.crypto.encoding import IntArray


@dataclass(frozen=True)
class SecureScales:
    """Public fixed-point parameters of the secure layer (both parties must agree).

    Attributes:
        b_bits: fractional bits of P's embedding ``b`` (|b| < 1, tanh output).
        g_bits: fractional bits of ``δ`` in the weight gradient; shares at ``2^(b_bits+g_bits)``.
        d_bits: fractional bits of ``δ`` in the embedding-gradient product.
        sigma: statistical security parameter: masks are ``2^sigma`` times larger.
        g_bound: largest accepted ``|δ|`` per user entry; larger raises OverflowDetected.
        value_bits: decoded ``|z_B|`` and ``|dL/db|`` must stay below ``2^value_bits``.
        max_users: most users in one step (sizes the masks).
        slot_bits: width of a packed slot (127 bits: 16 slots per 2048-bit plaintext).
        init_bits: fractional bits of E's rotation ``Q`` in ``W_B(0) = Q·G``; P's ``G`` has
            ``w_bits - init_bits`` (:mod:`vfl.protocol.initial_shares`).
    """

    b_bits: int = 20
    g_bits: int = 36
    d_bits: int = 30
    sigma: int = 40
    g_bound: float = 2.0**4
    value_bits: int = 16
    max_users: int = 1024
    slot_bits: int = 127
    init_bits: int = 28

    @property
    def w_bits(self) -> int:
        """Fractional bits of the ``W_B`` shares."""
        return self.b_bits + self.g_bits

    @property
    def zb_bits(self) -> int:
        """Fractional bits of the decoded ``z_B = B·(U+V)``."""
        return 2 * self.b_bits + self.g_bits

    @property
    def db_bits(self) -> int:
        """Fractional bits of the decoded ``dL/db = D·(U+V)ᵀ``."""
        return self.d_bits + self.w_bits

    @property
    def mask_bits(self) -> int:
        """Masks ``R`` are uniform in ``[-2^k, 2^k]``: ``2^sigma`` times the largest ``|Bᵀ·G|``."""
        growth = math.log2(self.max_users) + math.log2(self.g_bound)
        return self.sigma + self.w_bits + math.ceil(growth)

    def check(self) -> None:
        """Every decrypted packed result must fit its slot (see the module docstring).

        Raises:
            ValueError: if ``slot_bits`` is too small for the declared bounds.
        """
        need = max(
            self.mask_bits + 2,
            self.zb_bits + self.value_bits + 2,
            self.db_bits + self.value_bits + 2,
        )
        if self.slot_bits < need:
            raise ValueError(f"slot_bits={self.slot_bits} < {need} needed by the bounds")


def uniform_mask(shape: tuple[int, ...], magnitude_bits: int) -> IntArray:
    """Uniform integers in ``[-2^k, 2^k]`` from the OS CSPRNG (``k = magnitude_bits``)."""
    span = 2 ** (magnitude_bits + 1) + 1
    flat = [secrets.randbelow(span) - 2**magnitude_bits for _ in range(int(np.prod(shape)))]
    return np.array(flat, dtype=object).reshape(shape)


def int_matmul(a: IntArray, b: IntArray) -> IntArray:
    """Exact integer matrix product of object arrays (numpy keeps Python ints)."""
    product = np.dot(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    return np.asarray(product, dtype=object)


def scale_exact(x: IntArray, factor: Fraction) -> IntArray:
    """Returns ``round(x·factor)`` entrywise, exactly (half rounds up): ``|error| <= 1/2``.

    A float factor such as ``0.9`` is a dyadic rational, so ``Fraction(0.9)`` is exact.
    """
    num, den = factor.numerator, factor.denominator
    flat = [(2 * int(v) * num + den) // (2 * den) for v in np.asarray(x, dtype=object).ravel()]
    return np.array(flat, dtype=object).reshape(np.shape(x))
