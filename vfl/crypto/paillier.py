"""Typed Paillier layer: raw ring operations and encrypted vectors.

Scheme: Paillier, "Public-Key Cryptosystems Based on Composite Degree Residuosity Classes",
EUROCRYPT 1999, LNCS 1592, pp. 223-238, with ``g = n + 1``. Keys come from ``phe``
(``phe.paillier.generate_paillier_keypair``, accelerated by ``gmpy2``); decryption uses
``phe``'s CRT routine. Everything else is raw arithmetic modulo ``n^2``:

1. Encrypt ``m`` in ``[0, n)``: ``c = (1 + n*m) * r^n mod n^2`` with fresh uniform ``r``.
   The factor ``r^n mod n^2`` does not depend on ``m``, so it may come precomputed from a
   :class:`vfl.crypto.pool.RandomnessPool` (any :class:`RPowNSource`).
2. Add: ``E(a) * E(b) = E(a + b)``; add plaintext: ``E(a) * (1 + n*b) = E(a + b)``.
3. Scalar: ``E(a)^k = E(k * a)``; for ``k < 0`` use ``(E(a)^-1)^|k|``.
4. Re-randomise: ``E(a) * r^n = E(a)`` with fresh randomness, unlinkable to the input.

Integers here are residues of ``Z_n``; signed and real values are the business of
:mod:`vfl.crypto.encoding`. Ciphertexts are never evaluated in the clear: an
:class:`EncryptedVector` refuses ``bool``/``float``/``int`` and encrypted x encrypted products.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

import gmpy2
import numpy as np
from numpy.typing import ArrayLike
from phe import paillier as phe_paillier

from vfl.crypto.batched import combine
from vfl.crypto.encoding import as_int_array
from vfl.errors import MalformedCiphertext, VflError

if TYPE_CHECKING:
    from vfl.crypto.pool import RPowNSource
    from vfl.executor import Executor

_MAGIC = b"VFLE\x01"
_FINGERPRINT_BYTES = 16
_REFUSE = "cannot evaluate an encrypted value: decrypt it with the private key's owner"


class KeyMismatchError(VflError, ValueError):
    """Operands or a payload belong to different Paillier keys."""


@dataclass(frozen=True)
class PublicKey:
    """Paillier public key ``n`` (``g = n + 1``).

    Raises:
        ValueError: if ``n`` is not an odd integer of at least 64 bits.
    """

    n: int
    nsquare: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.n.bit_length() < 64 or self.n % 2 == 0:
            raise ValueError(f"a Paillier modulus must be odd and >= 64 bits, got {self.n}")
        object.__setattr__(self, "nsquare", self.n * self.n)

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        """Returns the key with big-endian modulus ``data`` (ValueError if not a modulus)."""
        return cls(int.from_bytes(data, "big"))

    def to_bytes(self) -> bytes:
        """Returns ``n`` as minimal big-endian bytes."""
        return self.n.to_bytes((self.n.bit_length() + 7) // 8, "big")

    @property
    def n_bits(self) -> int:
        """Bit length of ``n``."""
        return self.n.bit_length()

    def fingerprint(self) -> bytes:
        """Returns the first 16 bytes of SHA-256 over :meth:`to_bytes`."""
        return hashlib.sha256(self.to_bytes()).digest()[:_FINGERPRINT_BYTES]

    def random_r_pow_n(self) -> int:
        """Returns ``r^n mod n^2`` for a fresh uniform ``r`` in ``[1, n)``."""
        r = secrets.randbelow(self.n - 1) + 1
        return int(gmpy2.powmod(r, self.n, self.nsquare))

    def raw_encrypt(self, m: int, *, r_pow_n: int | None = None) -> int:
        """Returns ``E(m) = (1 + n*m) * r^n mod n^2`` for a residue ``0 <= m < n``, fresh ``r``.

        ``r_pow_n`` is a precomputed fresh ``r^n mod n^2`` from a pool, used once; if ``None``
        it is drawn now.

        Raises:
            ValueError: if ``m`` or ``r_pow_n`` is out of range.
        """
        if not 0 <= m < self.n:
            raise ValueError(f"plaintext must be a residue in [0, n), got {m}")
        obfuscator = self._checked_r_pow_n(r_pow_n)
        return (1 + self.n * m) % self.nsquare * obfuscator % self.nsquare

    def raw_add(self, c1: int, c2: int) -> int:
        """Returns ``E(a + b)`` given ``c1 = E(a)``, ``c2 = E(b)`` (both in ``(0, n^2)``)."""
        return c1 * c2 % self.nsquare

    def raw_add_plain(self, c: int, m: int) -> int:
        """Returns ``E(a + m)`` given ``c = E(a)`` and any integer ``m`` (taken mod ``n``)."""
        return c * ((1 + self.n * (m % self.n)) % self.nsquare) % self.nsquare

    def raw_mul_scalar(self, c: int, k: int) -> int:
        """Returns ``E(k * a)`` given ``c = E(a)`` and any integer ``k`` (negative uses ``c^-1``).

        Cost grows with ``|k|``'s bit length, so pass small signed scalars, not residues near n.
        """
        if k < 0:
            return int(gmpy2.powmod(gmpy2.invert(c, self.nsquare), -k, self.nsquare))
        return int(gmpy2.powmod(c, k, self.nsquare))

    def rerandomise(self, c: int, *, r_pow_n: int | None = None) -> int:
        """Returns ``c * r^n mod n^2``: a fresh encryption of ``c``'s plaintext (ValueError if
        ``r_pow_n`` is out of range)."""
        return c * self._checked_r_pow_n(r_pow_n) % self.nsquare

    def _checked_r_pow_n(self, r_pow_n: int | None) -> int:
        """Returns ``r_pow_n`` after a range check, or a fresh one."""
        if r_pow_n is None:
            return self.random_r_pow_n()
        if not 0 < r_pow_n < self.nsquare:
            raise ValueError("r_pow_n must be a residue in (0, n^2) from this key's pool")
        return r_pow_n


class PrivateKey:
    """Paillier private key; decrypts with the CRT routine of ``phe``."""

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        """Builds the key from primes ``p * q = n``; raises ValueError if ``p * q != n``."""
        if p * q != public_key.n:
            raise ValueError("p * q does not equal the public modulus")
        self.public_key = public_key
        self._phe = phe_paillier.PaillierPrivateKey(
            phe_paillier.PaillierPublicKey(public_key.n), p, q
        )

    def __repr__(self) -> str:
        return f"PrivateKey(n_bits={self.public_key.n_bits})"

    @property
    def primes(self) -> tuple[int, int]:
        """The secret factors ``(p, q)`` of ``n``: for the owner's own use (CRT randomness in
        :class:`~vfl.crypto.randomness.OwnerCrtSource`), never serialised or sent."""
        return int(self._phe.p), int(self._phe.q)

    def raw_decrypt(self, c: int) -> int:
        """Returns ``m`` in ``[0, n)`` given ``c = E(m)``; ValueError unless ``0 < c < n^2``."""
        if not 0 < c < self.public_key.nsquare:
            raise ValueError("ciphertext must be a residue in (0, n^2)")
        return int(self._phe.raw_decrypt(int(c)))

    def raw_decrypt_vector(self, vector: EncryptedVector) -> list[int]:
        """Returns ``vector``'s residues in C order (KeyMismatchError if under another key)."""
        _same_key(self.public_key, vector.public_key)
        return [self.raw_decrypt(c) for c in vector.ciphertexts]


@dataclass(frozen=True)
class KeyPair:
    """A Paillier key pair."""

    public_key: PublicKey
    private_key: PrivateKey

    @classmethod
    def generate(cls, n_bits: int = 2048) -> KeyPair:
        """Returns a fresh key pair with an ``n_bits``-bit modulus (``phe`` + ``gmpy2``).

        Raises ValueError if ``n_bits`` is odd or below 256.
        """
        if n_bits < 256 or n_bits % 2:
            raise ValueError(f"n_bits must be even and >= 256, got {n_bits}")
        phe_public, phe_private = phe_paillier.generate_paillier_keypair(n_length=n_bits)
        public = PublicKey(int(phe_public.n))
        return cls(public, PrivateKey(public, int(phe_private.p), int(phe_private.q)))


def require_same_key(a: PublicKey, b: PublicKey) -> None:
    """Raises KeyMismatchError unless ``a`` and ``b`` are the same key."""
    if a != b:
        raise KeyMismatchError(
            f"ciphertexts under different Paillier keys ({a.fingerprint().hex()[:12]} vs "
            f"{b.fingerprint().hex()[:12]})"
        )


_same_key = require_same_key


class EncryptedVector:
    """A 1-D or 2-D array of Paillier ciphertexts under one public key (C order).

    ``+``, ``-`` and ``*`` by plaintext integers, ``+``/``-`` with another vector under the
    same key, and ``matrix @ vector`` (:meth:`dot`) are supported; everything that would need
    the plaintext raises ``TypeError``.
    """

    __array_ufunc__ = None  # numpy defers ``ndarray op vector`` to our reflected operators

    def __init__(self, public_key: PublicKey, ciphertexts: Sequence[int], shape: tuple[int, ...]):
        """Wraps ciphertexts ``0 < c < n^2`` of a 1-D or 2-D ``shape`` (else ValueError)."""
        if len(shape) not in (1, 2) or int(np.prod(shape)) != len(ciphertexts):
            raise ValueError(f"{len(ciphertexts)} ciphertexts do not fill shape {shape}")
        self.public_key = public_key
        self.ciphertexts = [int(c) for c in ciphertexts]
        self.shape = tuple(shape)

    @classmethod
    def raw_encrypt(
        cls, public_key: PublicKey, ints: ArrayLike, *, pool: RPowNSource | None = None
    ) -> EncryptedVector:
        """Returns ``E(m mod n)`` for 1-D or 2-D (signed) integers ``ints``, each with fresh ``r``.

        ``pool`` optionally supplies precomputed ``r^n`` values for ``public_key``.

        Raises:
            TypeError: if an entry is not an integer.
            KeyMismatchError: if ``pool`` belongs to another key.
        """
        arr = as_int_array(ints)
        r_pow = _draw(public_key, pool, arr.size)
        cts = [
            public_key.raw_encrypt(int(m) % public_key.n, r_pow_n=r)
            for m, r in zip(arr.ravel(), r_pow, strict=True)
        ]
        return cls(public_key, cts, arr.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"EncryptedVector(shape={self.shape}, n_bits={self.public_key.n_bits})"

    def _refuse(self) -> NoReturn:
        """Raises TypeError: an encrypted value has no truth value, float or int."""
        raise TypeError(_REFUSE)

    __bool__ = __float__ = __int__ = __index__ = _refuse

    @property
    def T(self) -> EncryptedVector:
        """Returns ``E(X^T)`` given ``self = E(X)`` (2-D; 1-D is returned unchanged)."""
        if len(self.shape) == 1:
            return self
        rows, cols = self.shape
        cts = [self.ciphertexts[i * cols + j] for j in range(cols) for i in range(rows)]
        return EncryptedVector(self.public_key, cts, (cols, rows))

    def _new(self, cts: list[int]) -> EncryptedVector:
        return EncryptedVector(self.public_key, cts, self.shape)

    def __add__(self, other: EncryptedVector | ArrayLike) -> EncryptedVector:
        """Returns ``E(a + b)`` given ``self = E(a)`` and ``other = E(b)`` or plaintext ints ``b``.

        Raises:
            KeyMismatchError: if ``other`` is encrypted under another key.
            ValueError: if the shapes differ.
        """
        pk = self.public_key
        if isinstance(other, EncryptedVector):
            _same_key(pk, other.public_key)
            if other.shape != self.shape:
                raise ValueError(f"cannot add shapes {self.shape} and {other.shape}")
            pairs = zip(self.ciphertexts, other.ciphertexts, strict=True)
            return self._new([pk.raw_add(a, b) for a, b in pairs])
        plain = zip(self.ciphertexts, as_int_array(other, self.shape).ravel(), strict=True)
        return self._new([pk.raw_add_plain(c, int(m)) for c, m in plain])

    __radd__ = __add__

    def __neg__(self) -> EncryptedVector:
        """Returns ``E(-a)`` given ``self = E(a)``."""
        return self * -1

    def __sub__(self, other: EncryptedVector | ArrayLike) -> EncryptedVector:
        """Returns ``E(a - b)`` given ``self = E(a)`` and ``other = E(b)`` or plaintext ``b``."""
        return self + (-other if isinstance(other, EncryptedVector) else -as_int_array(other))

    def __rsub__(self, other: EncryptedVector | ArrayLike) -> EncryptedVector:
        """Returns ``E(b - a)`` given ``self = E(a)`` and plaintext ``b``."""
        return (-self) + other

    def __mul__(self, other: EncryptedVector | ArrayLike) -> EncryptedVector:
        """Returns ``E(k * a)`` elementwise given ``self = E(a)`` and plaintext ints ``k``.

        Raises:
            TypeError: if ``other`` is encrypted (Paillier is only additively homomorphic)
                or not integer.
        """
        if isinstance(other, EncryptedVector):
            raise TypeError("cannot multiply two encrypted values: Paillier is only additive")
        pairs = zip(self.ciphertexts, as_int_array(other, self.shape).ravel(), strict=True)
        return self._new([self.public_key.raw_mul_scalar(c, int(k)) for c, k in pairs])

    __rmul__ = __mul__

    def __matmul__(self, other: object) -> NoReturn:
        raise TypeError("only plaintext @ encrypted is supported (matrix @ vector)")

    def __rmatmul__(self, other: ArrayLike) -> EncryptedVector:
        return self.dot(other)

    def dot(
        self, matrix: EncryptedVector | ArrayLike, *, executor: Executor | None = None
    ) -> EncryptedVector:
        """Returns ``E(M · X)`` given ``self = E(X)`` and a plaintext integer matrix ``M``.

        This is the ``b · [[U]]`` product: ``M`` is ``m x d`` (signed integers), ``X`` is
        ``d x h`` (or ``d``), the result ``m x h`` (or ``m``). Zero entries cost nothing;
        cost grows with the bit length of the entries; bases reused by many rows of ``M`` get
        fixed-base tables and large products use ``executor`` (:func:`vfl.crypto.batched.combine`).

        Raises:
            ValueError: if ``M`` is not 2-D or its columns do not match ``X``'s rows.
            TypeError: if ``M`` is encrypted or not integer.
        """
        if isinstance(matrix, EncryptedVector):
            raise TypeError("cannot multiply two encrypted values: Paillier is only additive")
        mat = as_int_array(matrix)
        d = self.shape[0]
        if mat.ndim != 2 or mat.shape[1] != d:
            raise ValueError(f"cannot multiply a {mat.shape} matrix by encrypted {self.shape}")
        h = self.shape[1] if len(self.shape) == 2 else 1
        bases = [self.ciphertexts[j * h : (j + 1) * h] for j in range(d)]
        out = combine(bases, mat, self.public_key.nsquare, executor=executor)
        shape = (mat.shape[0], h) if len(self.shape) == 2 else (mat.shape[0],)
        return EncryptedVector(self.public_key, [c for row in out for c in row], shape)

    def rerandomised(self, *, pool: RPowNSource | None = None) -> EncryptedVector:
        """Returns a vector encrypting the same values with fresh, unlinkable randomness.

        Raises:
            KeyMismatchError: if ``pool`` belongs to another key.
        """
        pk = self.public_key
        r_pow = _draw(pk, pool, len(self.ciphertexts))
        pairs = zip(self.ciphertexts, r_pow, strict=True)
        return self._new([pk.rerandomise(c, r_pow_n=r) for c, r in pairs])

    def serialise(self, *, rerandomise: bool = True, pool: RPowNSource | None = None) -> bytes:
        """Returns the wire form: magic, key fingerprint, shape, fixed-width ciphertexts.

        Re-randomises first by default. A ciphertext produced by homomorphic operations is a
        deterministic function of its operands' ciphertexts and the plaintexts applied to
        them; sent back to the key's owner unchanged, the owner can test guesses of those
        plaintexts (or, for fresh ``1 + n*m`` without ``r^n``, read ``m`` directly). Pass
        ``rerandomise=False`` only for ciphertexts that stay with their producer. For
        ciphertexts going back to their key's owner keep a FULL source (or none): a
        short-exponent ``pool`` hides them from the owner only computationally
        (:mod:`vfl.crypto.randomness`).

        Raises:
            KeyMismatchError: if ``pool`` belongs to another key.
        """
        vec = self.rerandomised(pool=pool) if rerandomise else self
        width = (self.public_key.nsquare.bit_length() + 7) // 8
        header = _MAGIC + self.public_key.fingerprint() + struct.pack(">B", len(self.shape))
        dims = b"".join(struct.pack(">I", s) for s in self.shape)
        return header + dims + b"".join(c.to_bytes(width, "big") for c in vec.ciphertexts)

    @classmethod
    def deserialise(cls, data: bytes, public_key: PublicKey) -> EncryptedVector:
        """Returns the vector serialised by :meth:`serialise` under ``public_key``.

        Raises:
            KeyMismatchError: if ``data`` was made under another key.
            ValueError: if ``data`` is malformed (magic, rank or length).
            MalformedCiphertext: a ciphertext is not in ``(0, n^2)`` or not coprime to ``n``.
        """
        head = len(_MAGIC) + _FINGERPRINT_BYTES + 1
        if len(data) < head or not data.startswith(_MAGIC):
            raise ValueError("not a serialised EncryptedVector (bad magic or too short)")
        if data[len(_MAGIC) : head - 1] != public_key.fingerprint():
            raise KeyMismatchError("serialised vector was encrypted under another Paillier key")
        rank = data[head - 1]
        if rank not in (1, 2) or len(data) < head + 4 * rank:
            raise ValueError(f"serialised EncryptedVector has bad rank {rank}")
        shape = struct.unpack(f">{rank}I", data[head : head + 4 * rank])
        width = (public_key.nsquare.bit_length() + 7) // 8
        body = data[head + 4 * rank :]
        if len(body) != width * int(np.prod(shape)):
            raise ValueError(f"payload of {len(body)} bytes does not hold shape {shape}")
        cts = [int.from_bytes(body[i : i + width], "big") for i in range(0, len(body), width)]
        _check_residues(cts, public_key)
        return cls(public_key, cts, tuple(shape))


def _check_residues(cts: list[int], public_key: PublicKey) -> None:
    """Raises MalformedCiphertext unless each ``c`` is a unit mod ``n^2`` (``0 < c < n^2``,
    ``gcd(c, n) = 1``), as every encryption ``(1 + n*m) * r^n`` is."""
    for i, c in enumerate(cts):
        if not 0 < c < public_key.nsquare or gmpy2.gcd(c, public_key.n) != 1:
            raise MalformedCiphertext(
                f"serialised ciphertext {i} is outside (0, n^2) or not coprime to n of the "
                f"{public_key.n_bits}-bit key {public_key.fingerprint().hex()[:12]}: the "
                "sender is faulty or hostile"
            )


def _draw(public_key: PublicKey, pool: RPowNSource | None, k: int) -> list[int | None]:
    """Returns ``k`` pooled ``r^n`` values, or ``k`` Nones (meaning: draw fresh) without pool."""
    if pool is None:
        return [None] * k
    _same_key(public_key, pool.public_key)
    return list(pool.take(k))
