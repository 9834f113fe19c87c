"""Sources of Paillier obfuscators: full ``r^n`` and the short-exponent variant.

Every Paillier encryption and re-randomisation multiplies by an *obfuscator*, a random
``n``-th residue modulo ``n^2`` (Paillier 1999, EUROCRYPT). Two ways to draw one:

1. :attr:`Randomness.FULL` (the default): ``r^n mod n^2`` for uniform ``r`` in ``[1, n)``,
   one 2048-bit exponentiation modulo ``n^2`` (about 8 ms at 2048 bits). The result is a
   *uniform* ``n``-th residue, so a re-randomised ciphertext is distributed exactly like a
   fresh encryption of its plaintext: this hides the operands perfectly, even from the key's
   owner, who knows the factorisation.
2. :attr:`Randomness.SHORT_EXPONENT`: once per source, ``h = g0^n mod n^2`` for a uniform
   unit ``g0`` (``h`` is public); then each obfuscator is ``h^x mod n^2 = (g0^x)^n`` for a
   uniform ``x`` of ``exponent_bits`` bits, computed with a fixed-base windowed table in
   ``ceil(exponent_bits / window) - 1`` multiplications modulo ``n^2`` (about 15x faster at
   the default 1024-bit ``x`` for 2048-bit keys, more at shorter ``x``).

3. :attr:`Randomness.OWNER_CRT`, for the key's owner only: the same distribution as FULL,
   from the factorisation. For ``y`` uniform in ``[1, p)``, ``y^p mod p^2`` is the unique
   element of order dividing ``p - 1`` congruent to ``y`` mod ``p`` (Fermat:
   ``y^p = y mod p``, and ``(y^p)^(p-1) = 1 mod p^2``), so it is uniform in that subgroup;
   ``r^n mod p^2`` for uniform ``r`` is uniform there too (it depends only on ``r mod p`` and
   ``n`` is prime to ``p - 1``). CRT-combining independent halves mod ``p^2`` and ``q^2``
   therefore gives exactly the distribution of ``r^n mod n^2``, with two exponentiations of
   half the size (about 3x faster). Perfect hiding; only the owner can use it.

Security assumption of the short-exponent mode (stated, not proven here): the distribution
``{h^x mod n^2 : x < 2^l}`` is computationally indistinguishable from uniform ``n``-th
residues. Against parties that do not know the factorisation this is the assumption under
which Damgård, Jurik and Nielsen prove their fast Paillier variant secure with ``l ≈ |n|/2``
("A generalization of Paillier's public-key system with applications to electronic voting",
Int. J. Inf. Secur. 9(6), 2010; short-exponent discrete logs in ``Z*_{n^2}`` are
studied by Catalano, Gennaro, Howgrave-Graham and Nguyen, "Paillier's cryptosystem
revisited", ACM CCS 2001, and the decisional short-exponent problem by Koshiba and
Kurosawa, PKC 2004). The default ``l = n_bits / 2`` follows DJN.

The key's **owner** knows ``p`` and ``q`` and can take discrete logarithms modulo ``p`` and
``q`` separately: by Pohlig-Hellman on the smooth part of ``p - 1`` and ``q - 1`` plus a
kangaroo search (van Oorschot and Wiener, EUROCRYPT 1996) in ``2^((l - s)/2)`` steps, ``s``
being the bits of that smooth part, or by the number field sieve in ``F_p`` (about 2^80 at
1024-bit primes, whatever ``l``). Re-randomising with this mode therefore hides operands
from the owner only computationally, at that level; keep :attr:`Randomness.FULL` for
ciphertexts that go back to their key's owner unless that trade-off is accepted, and never
use ``l`` below ``2 * 128``. Fresh encryptions read by a party without the factorisation
rest on the DJN assumption above.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING

import gmpy2

if TYPE_CHECKING:
    from vfl.crypto.paillier import PrivateKey, PublicKey

MIN_EXPONENT_BITS = 256  # 2 * lambda for lambda = 128 against generic (kangaroo) attacks
DEFAULT_WINDOW = 8


class Randomness(Enum):
    """How obfuscators ``r^n mod n^2`` are drawn (see the module docstring for security)."""

    FULL = "full"
    SHORT_EXPONENT = "short_exponent"
    OWNER_CRT = "owner_crt"


@dataclass(frozen=True)
class FixedBaseTable:
    """Powers ``base^(d * 2^(w*i)) mod modulus`` for every window ``i`` and digit ``d``.

    With ``t = ceil(exponent_bits / w)`` windows of ``2^w - 1`` entries each, any exponent
    ``0 <= x < 2^(w*t)`` costs at most ``t - 1`` modular multiplications:
    ``base^x = prod_i T[i][x_i]`` where ``x = sum_i x_i * 2^(w*i)``.

    Raises:
        ValueError: if ``window`` is outside ``[1, 16]`` or ``exponent_bits < 1``.
    """

    base: int
    modulus: int
    exponent_bits: int
    window: int = DEFAULT_WINDOW
    _rows: tuple[tuple[gmpy2.mpz, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.window <= 16 or self.exponent_bits < 1:
            raise ValueError(
                f"FixedBaseTable needs 1 <= window <= 16 and exponent_bits >= 1, got window "
                f"{self.window}, exponent_bits {self.exponent_bits}"
            )
        m, rows = gmpy2.mpz(self.modulus), []
        first = gmpy2.mpz(self.base) % m
        for _ in range(math.ceil(self.exponent_bits / self.window)):
            row = [first]
            for _ in range((1 << self.window) - 2):
                row.append(row[-1] * first % m)
            rows.append(tuple(row))
            first = row[-1] * first % m  # base^(2^(w*(i+1)))
        object.__setattr__(self, "_rows", tuple(rows))

    def power(self, x: int) -> gmpy2.mpz:
        """Returns ``base^x mod modulus`` for ``0 <= x < 2^(w * windows)`` (ValueError outside)."""
        if x < 0 or x >> (self.window * len(self._rows)):
            raise ValueError(f"exponent of {x.bit_length()} bits exceeds the table")
        m, mask, acc = gmpy2.mpz(self.modulus), (1 << self.window) - 1, gmpy2.mpz(1)
        for row in self._rows:
            digit = x & mask
            if digit:
                acc = acc * row[digit - 1] % m
            x >>= self.window
        return acc


@lru_cache(maxsize=4)
def _table(h: int, nsquare: int, exponent_bits: int, window: int) -> FixedBaseTable:
    """The table for ``h`` (cached per process: pool workers build it once per key)."""
    return FixedBaseTable(h, nsquare, exponent_bits, window)


def short_exponent_batch(
    h: int, nsquare: int, exponent_bits: int, window: int, count: int
) -> list[int]:
    """Returns ``count`` values ``h^x mod n^2`` for fresh uniform ``x < 2^exponent_bits``."""
    table = _table(h, nsquare, exponent_bits, window)
    return [int(table.power(secrets.randbits(exponent_bits))) for _ in range(count)]


def random_h(public_key: PublicKey) -> int:
    """Returns ``h = g0^n mod n^2`` for a uniform unit ``g0`` in ``[2, n)``."""
    n = public_key.n
    while True:
        g0 = secrets.randbelow(n - 2) + 2
        if math.gcd(g0, n) == 1:
            return int(gmpy2.powmod(g0, n, public_key.nsquare))


class ShortExponentSource:
    """An :class:`~vfl.crypto.pool.RPowNSource` of short-exponent obfuscators ``h^x mod n^2``.

    ``h^x = (g0^x)^n`` is an ``n``-th residue, so it is a valid Paillier obfuscator; it is
    uniform only under the assumption stated in the module docstring (DJN 2010).

    Args:
        public_key: the key the values belong to.
        exponent_bits: bit length ``l`` of ``x``; default ``n_bits // 2`` (DJN).
        window: table window ``w``; cost ``ceil(l/w) - 1`` multiplications, table
            ``ceil(l/w) * (2^w - 1)`` residues (16 MB at ``l = 1024``, ``w = 8``, 2048 bits).
        h: a public base ``g0^n mod n^2`` to reuse; drawn fresh if ``None``.

    Raises:
        ValueError: if ``exponent_bits < 256`` or ``h`` is not a unit below ``n^2``.
    """

    def __init__(
        self,
        public_key: PublicKey,
        *,
        exponent_bits: int | None = None,
        window: int = DEFAULT_WINDOW,
        h: int | None = None,
    ) -> None:
        bits = public_key.n_bits // 2 if exponent_bits is None else exponent_bits
        if bits < MIN_EXPONENT_BITS:
            raise ValueError(
                f"exponent_bits={bits} is below {MIN_EXPONENT_BITS} (2 x 128-bit security); "
                "use a longer exponent or Randomness.FULL"
            )
        h = random_h(public_key) if h is None else h
        if not 1 < h < public_key.nsquare or math.gcd(h, public_key.n) != 1:
            raise ValueError("h must be a unit g0^n mod n^2 of this key")
        self._key, self.h, self.exponent_bits, self.window = public_key, h, bits, window
        self._table = _table(h, public_key.nsquare, bits, window)

    @property
    def public_key(self) -> PublicKey:
        """The key the values belong to."""
        return self._key

    def __repr__(self) -> str:
        return (
            f"ShortExponentSource(n_bits={self._key.n_bits}, exponent_bits={self.exponent_bits}, "
            f"window={self.window})"
        )

    def take(self, k: int) -> list[int]:
        """Returns ``k`` fresh obfuscators ``h^x mod n^2`` (ValueError if ``k < 0``)."""
        if k < 0:
            raise ValueError(f"cannot take {k} values")
        bits = self.exponent_bits
        return [int(self._table.power(secrets.randbits(bits))) for _ in range(k)]


class FullSource:
    """An :class:`~vfl.crypto.pool.RPowNSource` computing ``r^n mod n^2`` inline, on demand."""

    def __init__(self, public_key: PublicKey) -> None:
        self._key = public_key

    @property
    def public_key(self) -> PublicKey:
        """The key the values belong to."""
        return self._key

    def __repr__(self) -> str:
        return f"FullSource(n_bits={self._key.n_bits})"

    def take(self, k: int) -> list[int]:
        """Returns ``k`` fresh ``r^n mod n^2`` for uniform ``r`` (ValueError if ``k < 0``)."""
        if k < 0:
            raise ValueError(f"cannot take {k} values")
        return [self._key.random_r_pow_n() for _ in range(k)]


def owner_crt_batch(p: int, q: int, count: int) -> list[int]:
    """Returns ``count`` values distributed as ``r^n mod n^2``, from the factorisation.

    Each is ``CRT(y_p^p mod p^2, y_q^q mod q^2)`` with fresh uniform ``y_p`` in ``[1, p)`` and
    ``y_q`` in ``[1, q)`` (module docstring, item 3).
    """
    p2, q2 = gmpy2.mpz(p) ** 2, gmpy2.mpz(q) ** 2
    p2_inverse = gmpy2.invert(p2, q2)
    out: list[int] = []
    for _ in range(count):
        zp = gmpy2.powmod(secrets.randbelow(p - 1) + 1, p, p2)
        zq = gmpy2.powmod(secrets.randbelow(q - 1) + 1, q, q2)
        out.append(int(zp + p2 * ((zq - zp) * p2_inverse % q2)))
    return out


class OwnerCrtSource:
    """An :class:`~vfl.crypto.pool.RPowNSource` for the key's owner: FULL's distribution via CRT.

    Only the holder of ``private_key`` can build it; use it for the owner's own fresh
    encryptions (about 3x faster than :class:`FullSource`, same perfect hiding).
    """

    def __init__(self, private_key: PrivateKey) -> None:
        self._key = private_key.public_key
        self._p, self._q = private_key.primes

    @property
    def public_key(self) -> PublicKey:
        """The key the values belong to."""
        return self._key

    def __repr__(self) -> str:
        return f"OwnerCrtSource(n_bits={self._key.n_bits})"

    def take(self, k: int) -> list[int]:
        """Returns ``k`` fresh values distributed as ``r^n mod n^2`` (ValueError if ``k < 0``)."""
        if k < 0:
            raise ValueError(f"cannot take {k} values")
        return owner_crt_batch(self._p, self._q, k)
