"""Secret-shared interactive layer ``z_B = b·W_B`` with Paillier (SPEC §4), both parties' halves.

``W_B`` (d x h) is never held in the clear: E holds ``U``, P holds ``V``, ``W_B = (U + V) / S``
with the public weight scale ``S = 2^(f_b + f_g)``. Shares are signed integers at that scale.
Keeping every quantity at a fixed scale means no shared value is ever truncated: all scaling
happens when the final result is decoded by the party allowed to see it.

Steps of one training iteration over m users (E key ``[[.]]_E``, P key ``[[.]]_P``):

0. Setup. Each party draws its half of the initial ``W_B`` (``U_0``, ``V_0``: Xavier-normal
   with half the variance each, so neither knows the sum). E sends ``[[U]]_E``; afterwards P
   keeps ``[[U]]_E`` current homomorphically and E never re-encrypts it.
1. Forward (P). ``B = round(b·2^f_b)``; send ``[[B·U + B·V]]_E`` (re-randomised) and a fresh
   ``[[V]]_P``. E decrypts ``z_B = B·(U+V) / 2^(2f_b + f_g) = b·W_B``.
2. Backward (E). With ``δ`` = dL/dz_B summed per user: send ``[[G]]_E``,
   ``G = round(η·δ·2^f_g)``, and ``[[D·(U + V)ᵀ]]_P = D·[[V]]_Pᵀ + D·Uᵀ`` (re-randomised),
   ``D = round(δ·2^f_d)``.
3. Weight update (P). ``[[Bᵀ·G]]_E`` is ``η·bᵀδ`` at scale ``S``. Draw a mask ``R`` with
   ``|R| <= 2^sigma·bound``; send ``[[Bᵀ·G - R]]_E`` (re-randomised); ``V ← V - R``,
   ``[[U]]_E ← [[U]]_E - [[Bᵀ·G - R]]_E``. P decrypts ``dL/db = D·W_Bᵀ`` at ``2^f_d·S``.
4. Weight update (E). Decrypt ``Bᵀ·G - R`` and set ``U ← U - (Bᵀ·G - R)``. Now
   ``U + V`` moved by exactly ``-η·Bᵀ·G``: plain SGD on ``W_B`` with learning rate ``η``.

What each side sees: E -- ``z_B``, ``η·bᵀδ - R`` (masked, ``R`` is ``2^sigma`` times larger),
ciphertexts under P's key. P -- ``dL/db``, ciphertexts under E's key. Nobody sees ``W_B``.

Reference: the secret-shared interactive layer of Zhang et al., "Secure Bilateral Neural
Network", and FATE's hetero-NN interactive layer (Paillier, 2019 onwards).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vfl.crypto.encoding import OverflowDetected
from vfl.crypto.paillier import EncryptedVector, KeyPair, PrivateKey, PublicKey
from vfl.crypto.signed_packing import pack_rows, slots_per_plaintext, unpack_rows
from vfl.errors import ParameterMismatch

IntArray = NDArray[np.object_]  # Python ints of any size


@dataclass(frozen=True)
class SecureScales:
    """Public fixed-point parameters of the secure layer (both parties must agree).

    Attributes:
        b_bits: fractional bits of P's embedding ``b`` (|b| < 1, tanh output).
        g_bits: fractional bits of ``η·δ``; ``W_B`` shares live at ``S = 2^(b_bits+g_bits)``.
        d_bits: fractional bits of ``δ`` in the embedding-gradient product.
        sigma: statistical security parameter: masks are ``2^sigma`` times larger.
        g_bound: largest accepted ``|η·δ|`` per user entry; larger raises OverflowDetected.
        delta_bound: largest accepted ``|δ|`` per user entry.
        max_users: most users in one step (sizes the masks).
        slot_bits: width of a packed slot. Decrypted results must fit: ``z_B`` needs
            ``2·b_bits + g_bits`` plus ``log2(d·|W_B|)`` (40 bits allow ``|W_B|`` up to
            ``2^30 / d``), masked updates ``mask_bits + 1``, ``dL/db`` ``d_bits + w_bits``
            plus ``log2(h·|δ|·|W_B|)`` (again 40 bits).
    """

    b_bits: int = 20
    g_bits: int = 40
    d_bits: int = 30
    sigma: int = 40
    g_bound: float = 2.0**8
    delta_bound: float = 2.0**10
    max_users: int = 1024
    slot_bits: int = 144

    @property
    def w_bits(self) -> int:
        """Fractional bits of the ``W_B`` shares."""
        return self.b_bits + self.g_bits

    @property
    def mask_bits(self) -> int:
        """Masks ``R`` are uniform in ``[-2^k, 2^k]``: ``2^sigma`` times the largest update."""
        growth = np.log2(self.max_users + 1) + np.log2(self.g_bound)
        return self.sigma + self.w_bits + int(np.ceil(growth))

    def check(self) -> None:
        """Every decrypted packed result must fit its slot (see module docstring).

        Raises:
            ValueError: if ``slot_bits`` is too small for the declared bounds.
        """
        need = max(
            self.mask_bits + 2, 2 * self.b_bits + self.g_bits + 40, self.d_bits + self.w_bits + 40
        )
        if self.slot_bits < need:
            raise ValueError(f"slot_bits={self.slot_bits} < {need} needed by the bounds")


def quantise(x: NDArray[np.floating], bits: int, bound: float, what: str) -> IntArray:
    """Returns ``round(x·2^bits)`` as Python ints.

    Raises:
        OverflowDetected: if any ``|x| > bound`` or ``x`` is not finite.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all() or (np.abs(x) > bound).any():
        worst = float(np.nanmax(np.abs(x))) if x.size else 0.0
        raise OverflowDetected(f"{what}: |value| {worst:.3g} exceeds the declared bound {bound}")
    # Python ints from the exactly-rounded doubles: exact for any ``bits``.
    flat = [int(v) for v in np.rint(x * 2.0**bits).ravel()]
    return np.array(flat, dtype=object).reshape(x.shape)


def dequantise(ints: IntArray, bits: int) -> NDArray[np.float64]:
    """Returns ``ints / 2^bits`` as floats (exact ints divided once, at the end)."""
    flat = [int(v) / 2**bits for v in np.asarray(ints, dtype=object).ravel()]
    return np.array(flat, dtype=np.float64).reshape(np.shape(ints))


def signed(residues: list[int], n: int) -> list[int]:
    """Lifts residues of ``Z_n`` to signed ints in ``(-n/3, n/3)``.

    Raises:
        OverflowDetected: for a residue in the middle third (a result wrapped around ``n``).
    """
    limit = n // 3
    out = []
    for r in residues:
        if r <= limit:
            out.append(r)
        elif r >= n - limit:
            out.append(r - n)
        else:
            raise OverflowDetected("a decrypted result left the band |x| < n/3: overflow")
    return out


def decrypt_signed(key: PrivateKey, vec: EncryptedVector) -> IntArray:
    """Decrypts ``vec`` into signed ints, shaped like ``vec``."""
    ints = signed(key.raw_decrypt_vector(vec), key.public_key.n)
    return np.array(ints, dtype=object).reshape(vec.shape)


def initial_half(d: int, h: int, scales: SecureScales, rng: np.random.Generator) -> IntArray:
    """One party's half of the initial ``W_B``: Xavier-normal with half the variance, scaled."""
    std = np.sqrt(2.0 / (d + h)) / np.sqrt(2.0)
    return quantise(rng.normal(0.0, std, (d, h)), scales.w_bits, 64.0, "initial W_B half")


def uniform_mask(shape: tuple[int, ...], magnitude_bits: int) -> IntArray:
    """Uniform integers in ``[-2^k, 2^k]`` from the OS CSPRNG (``k = magnitude_bits``)."""
    span = 2 ** (magnitude_bits + 1) + 1
    flat = [secrets.randbelow(span) - 2**magnitude_bits for _ in range(int(np.prod(shape)))]
    return np.array(flat, dtype=object).reshape(shape)


def int_matmul(a: IntArray, b: IntArray) -> IntArray:
    """Exact integer matrix product of object arrays (numpy keeps Python ints)."""
    product = np.dot(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    return np.asarray(product, dtype=object)


def agreed_parameters(
    scales: SecureScales, shape: tuple[int, ...], key_bits: int
) -> dict[str, int | float]:
    """What both parties must have identical before any ciphertext is exchanged."""
    return {
        "key_bits": key_bits,
        "d": int(shape[0]),
        "h": int(shape[1]),
        **{k: v for k, v in vars(scales).items()},
    }


def check_agreement(
    mine: dict[str, int | float], theirs: dict[str, int | float], *, me: str, peer: str
) -> None:
    """Compare parameter fingerprints field by field.

    Raises:
        ParameterMismatch: naming every differing field with both parties' values.
    """
    diff = [
        f"{k}: {me} has {mine.get(k)!r}, {peer} has {theirs.get(k)!r}"
        for k in sorted(set(mine) | set(theirs))
        if mine.get(k) != theirs.get(k)
    ]
    if diff:
        raise ParameterMismatch(
            "agreed parameters differ -- "
            + "; ".join(diff)
            + ". Fix: give both parties the same job config"
        )


@dataclass(frozen=True)
class Packer:
    """Packs the last axis of integer matrices, ``k`` slots per plaintext of one key."""

    slot_bits: int
    k: int

    @classmethod
    def for_key(cls, key: PublicKey, scales: SecureScales) -> Packer:
        """The layout for plaintexts of ``key``."""
        scales.check()
        return cls(scales.slot_bits, slots_per_plaintext(key.n_bits, scales.slot_bits))

    def encrypt(self, key: PublicKey, rows: IntArray) -> EncryptedVector:
        """Fresh ``[[pack(rows)]]`` under ``key``."""
        return EncryptedVector.raw_encrypt(key, pack_rows(rows, self.slot_bits, self.k))

    def pack(self, rows: IntArray) -> IntArray:
        """Plaintext packing of ``rows`` (to add to a packed ciphertext)."""
        return pack_rows(rows, self.slot_bits, self.k)

    def decrypt(self, key: PrivateKey, vec: EncryptedVector, length: int) -> IntArray:
        """Decrypt packed rows and unpack them to ``length`` signed ints per row."""
        return unpack_rows(decrypt_signed(key, vec), self.slot_bits, self.k, length)


@dataclass
class ActiveShare:
    """E's side: its key pair, ``U``, and the latest packed ``[[Vᵀ]]_P`` received from P."""

    keys: KeyPair
    u: IntArray
    scales: SecureScales
    peer_key: PublicKey | None = None
    enc_vt: EncryptedVector | None = None

    @property
    def own(self) -> Packer:
        """Packing under E's key."""
        return Packer.for_key(self.keys.public_key, self.scales)

    def params(self) -> dict[str, int | float]:
        """E's side of the parameter agreement."""
        return agreed_parameters(self.scales, self.u.shape, self.keys.public_key.n_bits)

    def setup_payload(self) -> tuple[bytes, bytes]:
        """E's public key and a fresh packed ``[[U]]_E`` (fresh: no re-randomising needed)."""
        enc_u = self.own.encrypt(self.keys.public_key, self.u)
        return self.keys.public_key.to_bytes(), enc_u.serialise(rerandomise=False)

    def decode_zb(self, enc_zb: bytes) -> NDArray[np.float64]:
        """Step 1 at E: ``z_B = b·W_B`` (m x h)."""
        vec = EncryptedVector.deserialise(enc_zb, self.keys.public_key)
        ints = self.own.decrypt(self.keys.private_key, vec, self.u.shape[1])
        return dequantise(ints, 2 * self.scales.b_bits + self.scales.g_bits)

    def backward_payload(self, delta: NDArray[np.floating], lr: float) -> tuple[bytes, bytes]:
        """Step 2: packed ``[[round(η·δ·2^f_g)]]_E`` and ``[[D·W_Bᵀ]]_P`` (per-user ``δ``)."""
        if self.peer_key is None or self.enc_vt is None:
            raise RuntimeError("backward before a training forward: no [[V]]_P yet")
        s = self.scales
        g = quantise(lr * np.asarray(delta), s.g_bits, s.g_bound, "η·δ (E's gradient)")
        enc_g = self.own.encrypt(self.keys.public_key, g)
        d = quantise(np.asarray(delta), s.d_bits, s.delta_bound, "δ (E's gradient)")
        theirs = Packer.for_key(self.peer_key, s)
        # D·[[pack(Vᵀ)]] + pack(D·Uᵀ) = [[pack(D·(U+V)ᵀ)]], one packed row per user
        enc_db = self.enc_vt.dot(d) + theirs.pack(int_matmul(d, self.u.T))
        return enc_g.serialise(rerandomise=False), enc_db.serialise()

    def apply_update(self, enc_ge: bytes) -> None:
        """Step 4: ``U ← U - (Bᵀ·G - R)``."""
        vec = EncryptedVector.deserialise(enc_ge, self.keys.public_key)
        self.u = self.u - self.own.decrypt(self.keys.private_key, vec, self.u.shape[1])


@dataclass
class PassiveShare:
    """P's side: its key pair, ``V``, and packed ``[[U]]_E`` kept current homomorphically."""

    keys: KeyPair
    v: IntArray
    scales: SecureScales
    enc_u: EncryptedVector | None = None
    _b: IntArray | None = None

    def _theirs(self) -> tuple[EncryptedVector, Packer]:
        """``[[U]]_E`` and the packing under E's key."""
        if self.enc_u is None:
            raise RuntimeError("no [[U]]_E yet: setup first")
        return self.enc_u, Packer.for_key(self.enc_u.public_key, self.scales)

    def params(self) -> dict[str, int | float]:
        """P's side of the parameter agreement."""
        return agreed_parameters(self.scales, self.v.shape, self.keys.public_key.n_bits)

    def accept_setup(self, public_key: bytes, enc_u: bytes) -> bytes:
        """Step 0 at P: store packed ``[[U]]_E``; return P's public key."""
        peer = PublicKey.from_bytes(public_key)
        self.enc_u = EncryptedVector.deserialise(enc_u, peer)
        packed = self._theirs()[1].pack(self.v).shape
        if self.enc_u.shape != packed:
            raise ValueError(f"[[U]] has packed shape {self.enc_u.shape}, expected {packed}")
        return self.keys.public_key.to_bytes()

    def forward_payload(self, b: NDArray[np.floating], *, train: bool) -> tuple[bytes, bytes]:
        """Step 1 at P: ``[[B·(U+V)]]_E`` (re-randomised) and, if training, ``[[pack(Vᵀ)]]_P``."""
        enc_u, theirs = self._theirs()
        if len(b) > self.scales.max_users:
            raise ValueError(f"{len(b)} users in one step; the masks allow {self.scales.max_users}")
        big_b = quantise(b, self.scales.b_bits, 1.0, "b (P's embedding)")
        enc_zb = enc_u.dot(big_b) + theirs.pack(int_matmul(big_b, self.v))
        self._b = big_b if train else None
        if not train:
            return enc_zb.serialise(), b""
        own = Packer.for_key(self.keys.public_key, self.scales)
        enc_vt = own.encrypt(self.keys.public_key, np.ascontiguousarray(self.v.T))
        return enc_zb.serialise(), enc_vt.serialise(rerandomise=False)

    def backward(self, enc_g: bytes, enc_db: bytes) -> tuple[bytes, NDArray[np.float64]]:
        """Step 3: masked update for E, own share update, and ``dL/db`` (m x d)."""
        if self._b is None:
            raise RuntimeError("backward without a matching training forward")
        s, (enc_u, theirs) = self.scales, self._theirs()
        g = EncryptedVector.deserialise(enc_g, enc_u.public_key)
        grad = g.dot(np.ascontiguousarray(self._b.T))  # [[pack(Bᵀ·G)]]_E, d rows
        mask = uniform_mask(self.v.shape, s.mask_bits)
        masked = grad - theirs.pack(mask)
        self.v = self.v - mask
        self.enc_u = enc_u - masked
        db = EncryptedVector.deserialise(enc_db, self.keys.public_key)
        own = Packer.for_key(self.keys.public_key, s)
        d_b = own.decrypt(self.keys.private_key, db, self.v.shape[0])
        self._b = None
        return masked.serialise(), dequantise(d_b, s.d_bits + s.w_bits)
