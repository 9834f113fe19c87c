"""The two payload codecs of the interactive layer: packed Paillier, and plain integers.

Both offer the same operations on matrices of signed integers, so the layer's code and its
messages are identical in both modes:

* ``encrypt(X)``: a fresh ``[[pack(X)]]`` (owner of the key) -- rows of ``X`` packed along
  the last axis, ``k`` slots per plaintext (:mod:`vfl.crypto.signed_packing`);
* ``dot(M, [[X]])`` = ``[[pack(M·X)]]``; ``add_plain([[X]], Y)`` = ``[[pack(X+Y)]]``
  (anyone holding the public key);
* ``dump(v, fresh=...)``: wire bytes, **re-randomised** unless ``v`` is a fresh encryption;
* ``decrypt([[pack(X)]])`` = ``X`` (owner of the key).

:class:`PlainCipher` performs the same integer arithmetic without encryption. Every Paillier
operation is counted in :class:`OpCounts` (the op-count model of ``benchmarks/protocol.py``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vfl.crypto.encoding import IntArray, OverflowDetected, lift_signed
from vfl.crypto.paillier import EncryptedVector, PrivateKey, PublicKey
from vfl.crypto.pool import RPowNSource
from vfl.crypto.signed_packing import pack_rows, slots_per_plaintext, unpack_rows
from vfl.errors import ProtocolError
from vfl.protocol.fixed_point import SecureScales, int_matmul
from vfl.protocol.kernels import Kernels

_PLAIN_MAGIC = b"VFLP\x01"
_PLAIN_WIDTH = 40  # bytes per signed integer in plaintext mode (|x| < 2^319)


@dataclass
class OpCounts:
    """Paillier operations performed by one party (ciphertexts, not slots)."""

    encryptions: int = 0
    decryptions: int = 0
    rerandomisations: int = 0
    scalar_mults: dict[int, int] = field(default_factory=dict)  # exponent bits -> count
    products: int = 0  # matrix entries x packed columns processed, zeros included
    ciphertext_adds: int = 0
    plaintext_adds: int = 0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready counts."""
        return {
            "encryptions": self.encryptions,
            "decryptions": self.decryptions,
            "rerandomisations": self.rerandomisations,
            "scalar_mults": {str(k): v for k, v in sorted(self.scalar_mults.items())},
            "products": self.products,
            "ciphertext_adds": self.ciphertext_adds,
            "plaintext_adds": self.plaintext_adds,
        }

    def total_scalar_mults(self) -> int:
        """All scalar multiplications, whatever their exponent size."""
        return sum(self.scalar_mults.values())


@dataclass
class PlainRows:
    """A plaintext-mode payload: the integer matrix itself."""

    rows: IntArray

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the matrix."""
        return tuple(self.rows.shape)


Sealed = EncryptedVector | PlainRows


class LayerCipher(Protocol):
    """What the interactive layer needs under one key (see the module docstring)."""

    counts: OpCounts

    def key_bytes(self) -> bytes: ...
    def encrypt(self, rows: IntArray) -> Sealed: ...
    def decrypt(self, vec: Sealed, length: int) -> IntArray: ...
    def dot(self, mat: IntArray, vec: Sealed, *, bits: int) -> Sealed: ...
    def add_plain(self, vec: Sealed, rows: IntArray) -> Sealed: ...
    def dump(self, vec: Sealed, *, fresh: bool) -> bytes: ...
    def load(self, data: bytes, *, rows: int, length: int, what: str) -> Sealed: ...


def _paillier(vec: Sealed) -> EncryptedVector:
    if not isinstance(vec, EncryptedVector):
        raise ProtocolError("a plaintext payload reached the encrypted protocol")
    return vec


class PaillierCipher:
    """Packed Paillier under ``public_key``; ``private_key`` only for its owner.

    ``randomness`` supplies every ``r^n`` (encryptions and re-randomisations); ``None`` draws
    each one fresh in the caller.
    """

    def __init__(
        self,
        public_key: PublicKey,
        scales: SecureScales,
        *,
        private_key: PrivateKey | None = None,
        randomness: RPowNSource | None = None,
        kernels: Kernels | None = None,
    ) -> None:
        scales.check()
        self.public_key, self.private_key = public_key, private_key
        self.slot_bits = scales.slot_bits
        self.k = slots_per_plaintext(public_key.n_bits, scales.slot_bits)
        self.randomness = randomness
        self.kernels = kernels or Kernels()
        self.counts = OpCounts()

    def key_bytes(self) -> bytes:
        """The public key on the wire."""
        return self.public_key.to_bytes()

    def packed_width(self, length: int) -> int:
        """Ciphertexts per row of ``length`` slots."""
        return -(-length // self.k)

    def encrypt(self, rows: IntArray) -> Sealed:
        """Fresh ``[[pack(rows)]]``, each ciphertext with fresh ``r^n``."""
        packed = pack_rows(rows, self.slot_bits, self.k)
        self.counts.encryptions += packed.size
        return EncryptedVector.raw_encrypt(self.public_key, packed, pool=self.randomness)

    def decrypt(self, vec: Sealed, length: int) -> IntArray:
        """Rows of ``length`` signed ints from ``[[pack(rows)]]`` (owner only).

        Raises:
            ProtocolError: without the private key.
            OverflowDetected: if a result wrapped around ``n`` or overflowed its slots.
        """
        v = _paillier(vec)
        if self.private_key is None:
            raise ProtocolError("only the key's owner can decrypt")
        self.counts.decryptions += len(v.ciphertexts)
        residues = self.kernels.decrypt(self.private_key, v.ciphertexts)
        ints = np.array(lift_signed(residues, self.public_key.n), dtype=object).reshape(v.shape)
        return unpack_rows(ints, self.slot_bits, self.k, length)

    def dot(self, mat: IntArray, vec: Sealed, *, bits: int) -> Sealed:
        """``[[pack(M·X)]]`` from ``[[pack(X)]]``; ``bits`` is the declared size of ``|M|``."""
        v = _paillier(vec)
        nonzero = int(np.count_nonzero(np.asarray(mat, dtype=object) != 0))
        cols = v.shape[1] if len(v.shape) == 2 else 1
        self.counts.scalar_mults[bits] = self.counts.scalar_mults.get(bits, 0) + nonzero * cols
        self.counts.products += int(np.size(mat)) * cols
        self.counts.ciphertext_adds += max(0, nonzero - len(mat)) * cols
        return self.kernels.dot(v, mat)

    def add_plain(self, vec: Sealed, rows: IntArray) -> Sealed:
        """``[[pack(X + rows)]]``."""
        v = _paillier(vec)
        self.counts.plaintext_adds += len(v.ciphertexts)
        return v + pack_rows(rows, self.slot_bits, self.k)

    def dump(self, vec: Sealed, *, fresh: bool) -> bytes:
        """Wire bytes; re-randomised unless ``fresh`` (a fresh encryption needs none)."""
        v = _paillier(vec)
        if not fresh:
            self.counts.rerandomisations += len(v.ciphertexts)
        return v.serialise(rerandomise=not fresh, pool=self.randomness)

    def load(self, data: bytes, *, rows: int, length: int, what: str) -> Sealed:
        """Parse a payload that must hold ``rows`` packed rows of ``length`` slots.

        Raises:
            ProtocolError: if it is malformed, under another key or of the wrong shape.
        """
        try:
            vec = EncryptedVector.deserialise(data, self.public_key)
        except ValueError as exc:
            raise ProtocolError(f"{what}: {exc}") from exc
        want = (rows, self.packed_width(length))
        if vec.shape != want:
            raise ProtocolError(f"{what}: packed shape {vec.shape}, expected {want}")
        return vec


def _plain(vec: Sealed) -> IntArray:
    if not isinstance(vec, PlainRows):
        raise ProtocolError("a ciphertext reached the plaintext protocol")
    return vec.rows


class PlainCipher:
    """Plaintext mode: the same operations on the integers themselves (no key, no masks)."""

    def __init__(self) -> None:
        self.counts = OpCounts()

    def key_bytes(self) -> bytes:
        """No key in plaintext mode."""
        return b""

    def encrypt(self, rows: IntArray) -> Sealed:
        """The rows themselves."""
        return PlainRows(np.array(rows, dtype=object))

    def decrypt(self, vec: Sealed, length: int) -> IntArray:
        """The rows themselves."""
        return _plain(vec)[:, :length]

    def dot(self, mat: IntArray, vec: Sealed, *, bits: int) -> Sealed:
        """``M·X``."""
        return PlainRows(int_matmul(mat, _plain(vec)))

    def add_plain(self, vec: Sealed, rows: IntArray) -> Sealed:
        """``X + rows``."""
        return PlainRows(_plain(vec) + rows)

    def dump(self, vec: Sealed, *, fresh: bool) -> bytes:
        """Magic, shape, then each integer as 40 signed big-endian bytes.

        Raises:
            OverflowDetected: if an integer does not fit 40 bytes.
        """
        rows = _plain(vec)
        head = _PLAIN_MAGIC + struct.pack(">II", *rows.shape)
        try:
            body = b"".join(int(x).to_bytes(_PLAIN_WIDTH, "big", signed=True) for x in rows.ravel())
        except OverflowError as exc:
            raise OverflowDetected("a plaintext-mode integer exceeds 2^319") from exc
        return head + body

    def load(self, data: bytes, *, rows: int, length: int, what: str) -> Sealed:
        """Parse :meth:`dump` output of shape ``(rows, length)``.

        Raises:
            ProtocolError: if it is malformed or of the wrong shape.
        """
        head = len(_PLAIN_MAGIC) + 8
        if len(data) < head or not data.startswith(_PLAIN_MAGIC):
            raise ProtocolError(f"{what}: not a plaintext-mode payload")
        shape = struct.unpack(">II", data[len(_PLAIN_MAGIC) : head])
        if shape != (rows, length) or len(data) != head + _PLAIN_WIDTH * rows * length:
            raise ProtocolError(f"{what}: shape {shape}, expected {(rows, length)}")
        w = _PLAIN_WIDTH
        flat = [
            int.from_bytes(data[i : i + w], "big", signed=True) for i in range(head, len(data), w)
        ]
        return PlainRows(np.array(flat, dtype=object).reshape(shape))
