"""Secret-shared interactive layer ``z_B = b·W_B`` with Paillier (SPEC §4), both parties' halves.

``W_B`` (d x h) is never held in the clear: E holds ``U``, P holds ``V``, ``W_B = (U + V) / S``
with the public weight scale ``S = 2^(f_b + f_g)`` (:mod:`vfl.protocol.fixed_point`). Each
party has its own Paillier key pair; ``[[x]]_E`` is under E's key, ``[[x]]_P`` under P's.

Steps of one training iteration over the m distinct users of a step (rows of a user share
one ``b`` and one summed ``δ``, so every count below is per user, never per row):

0. Setup (once). Public keys and agreed parameters are exchanged, and with them the initial
   shares (:mod:`vfl.protocol.initial_shares`): ``W_B(0) = Q·G`` with E's secret random
   rotation ``Q`` and P's secret Xavier-normal ``G``; E sends fresh ``[[Qᵀ]]_E``, P returns
   ``[[Gᵀ·Qᵀ - Mᵀ]]_E`` (re-randomised) and keeps ``V0 = M``, a mask ``2^sigma`` times
   larger than ``|W_B(0)|``; E decrypts ``U0 = W_B(0) - M``. No share -- and nothing else
   either party holds -- is correlated with ``W_B(0)``: ``U0`` is within ``2^-sigma`` of
   the independent ``-M``; ``Q·G`` has the law of ``G`` whatever ``Q`` (rotation invariance
   of the isotropic Gaussian), so ``Q`` says nothing of it; and given ``G``, ``W_B(0)`` is
   uniform over ``{Q·G}``, with conditional mean 0 (P learns only the Gram ``GᵀG``). So the
   first ``z_B`` tells E about ``b`` what ``b·W`` for an unknown Gaussian ``W`` would. P must
   not know ``W_B(0)`` either: it would solve its first ``dL/db = δ·W_B(0)ᵀ`` for ``δ``, then
   follow every later ``W_B`` and ``δ``. From the first update on, each share also carries
   the fresh masks ``R``.
1. Forward. E sends a fresh ``[[U]]_E`` whenever ``U`` changed. P computes, with
   ``B = round(b·2^f_b)``, ``[[B·U + B·V]]_E = B·[[U]]_E + B·V``, re-randomises it and sends
   it with a fresh ``[[Vᵀ]]_P``. E decrypts ``z_B = b·W_B``; it learns ``z_B``, not ``b``.
2. Backward at E. With ``δ = dL/dz_B`` summed per user: fresh ``[[G]]_E``,
   ``G = round(δ·2^f_g)``, and ``[[D·(U+V)ᵀ]]_P = D·[[Vᵀ]]_P + D·Uᵀ`` (re-randomised),
   ``D = round(δ·2^f_d)``.
3. Weight gradient at P. ``[[Bᵀ·G]]_E`` is ``bᵀδ`` at scale ``S``. P draws a fresh mask
   ``R`` uniform in ``[-2^mask_bits, 2^mask_bits]`` (``2^sigma`` times the largest
   ``|Bᵀ·G|``), sends ``[[Bᵀ·G - R]]_E`` (re-randomised), keeps ``R`` as its gradient share
   and steps ``V``. P decrypts ``dL/db = D·W_Bᵀ`` and back-propagates through its bottom model.
4. Weight update at E. E decrypts ``Bᵀ·G - R`` as its gradient share and steps ``U``. Both
   run the same SGD (momentum, weight decay) on their shares (:mod:`vfl.protocol.share_optim`),
   so ``U + V`` moves exactly as SGD on ``W_B`` with gradient ``bᵀδ``.

What each side sees: E -- ``z_B``, ``bᵀδ - R``, ciphertexts under P's key. P -- ``dL/db``,
ciphertexts under E's key. Nobody sees ``W_B``. In plaintext mode (development only, both
parties must allow it) the same messages carry the integers themselves and ``R = 0``.

Reference: the secret-shared interactive layer of Zhang et al., "Secure Bilateral Neural
Network", and FATE's hetero-NN interactive layer (Paillier, 2019 onwards).
"""

from __future__ import annotations

import secrets
import time

import numpy as np
from numpy.typing import NDArray

from vfl.crypto.encoding import IntArray, dequantise, quantise
from vfl.crypto.paillier import KeyPair, PrivateKey, PublicKey
from vfl.crypto.pool import RandomnessPool, RPowNSource, randomness_source
from vfl.crypto.randomness import owner_mode
from vfl.errors import ParameterMismatch, ProtocolError, field_differences
from vfl.executor import InlineExecutor, PartyExecutor
from vfl.protocol.agreement import (
    LayerSettings,
    agreed_parameters,
    check_agreement,
    check_mode_allowed,
)
from vfl.protocol.ciphers import LayerCipher, OpCounts, PlainCipher, Sealed
from vfl.protocol.embedding_noise import EmbeddingNoise
from vfl.protocol.fixed_point import SecureScales, int_matmul, uniform_mask
from vfl.protocol.initial_shares import initial_factor, initial_rotation, masked_initial_share
from vfl.protocol.kernels import Kernels
from vfl.protocol.options import Mode, SecurityFloor
from vfl.protocol.share_optim import ShareSgd
from vfl.protocol.suites import CipherParts, CipherSuite, cipher_suite

__all__ = [
    "ActiveShare",
    "LayerSettings",
    "PassiveShare",
    "SecureScales",
    "agreed_parameters",
    "check_agreement",
    "check_floor",
    "check_mode_allowed",
    "generate_keys",
    "initial_factor",
    "initial_rotation",
]

POOL_SIZE = 256  # r^n values kept in stock per key and party


def generate_keys(settings: LayerSettings) -> KeyPair | None:
    """A fresh key pair of ``settings.key_bits`` bits from the suite ``settings.cipher``
    names, or None in plaintext mode."""
    if settings.mode is Mode.PLAINTEXT:
        return None
    return cipher_suite(settings.cipher).generate_keys(settings.key_bits)


def check_floor(settings: LayerSettings, floor: SecurityFloor, *, party: str) -> None:
    """Refuse ``settings`` below ``party``'s own security floor (call before generating keys).

    Raises:
        SecurityFloorError: the key is shorter than ``floor.min_key_bits``, or short-exponent
            re-randomisation is asked of a party that does not allow it.
    """
    floor.check(
        mode=settings.mode, key_bits=settings.key_bits, randomness=settings.rerandomise, party=party
    )


class _Side:
    """What both parties' halves share: settings, own key and cipher, the peer's cipher."""

    def __init__(
        self,
        settings: LayerSettings,
        keys: KeyPair | None,
        *,
        allowed: bool,
        party: str,
        floor: SecurityFloor,
        executor: PartyExecutor | None,
    ) -> None:
        check_mode_allowed(settings.mode, allowed, party=party)
        check_floor(settings, floor, party=party)
        self.settings, self.scales, self.party = settings, settings.scales, party
        self._executor = executor
        if executor is None:
            self.kernels = Kernels(settings.workers)
        else:
            self.kernels = Kernels(executor=executor.executor, chunk_size=executor.chunk_size)
        self._pools: list[RandomnessPool] = []
        self.suite: CipherSuite = cipher_suite(settings.cipher)
        self.own: LayerCipher = self._cipher(keys)
        self.peer: LayerCipher | None = None

    def _source(self, public_key: PublicKey, owner: PrivateKey | None = None) -> RPowNSource:
        """Obfuscators: ``owner_mode(rerandomise)`` for own fresh encryptions (OWNER_CRT, or
        OWNER_SHORT_EXPONENT under a short-exponent plan), ``rerandomise`` for the peer's."""
        rerandomise = self.settings.rerandomise
        mode = rerandomise if owner is None else owner_mode(rerandomise)
        placed = self._executor or PartyExecutor(InlineExecutor())
        source = randomness_source(
            public_key,
            mode,
            pool_size=POOL_SIZE if self.settings.precompute else 0,
            workers=1,
            private_key=owner,
            executor=None if self._executor is None else placed.executor,
            chunk_size=placed.chunk_size,
        )
        if isinstance(source, RandomnessPool):
            self._pools.append(source)
        return source

    def _cipher(self, keys: KeyPair | None) -> LayerCipher:
        if self.settings.mode is Mode.PLAINTEXT:
            return PlainCipher()
        if keys is None:
            raise ValueError(f"party '{self.party}': the encrypted protocol needs a key pair")
        if keys.public_key.n_bits != self.settings.key_bits:
            raise ValueError(
                f"party '{self.party}': key of {keys.public_key.n_bits} bits, settings say "
                f"{self.settings.key_bits}"
            )
        return self.suite.cipher(
            CipherParts(
                keys.public_key,
                self.scales,
                self.kernels,
                private_key=keys.private_key,
                randomness=self._source(keys.public_key, keys.private_key),
            )
        )

    def set_peer(self, key: bytes, *, scheme: str, peer: str = "the peer") -> None:
        """The cipher under the other party's public key, which ``peer`` says is a key of
        the suite ``scheme`` (``"none"`` in plaintext mode).

        Raises:
            ParameterMismatch: ``scheme`` is not this party's (names the field and both).
            ProtocolError: the key is malformed or not of the agreed size.
        """
        diff = field_differences(
            {"cipher": self.settings.scheme}, {"cipher": scheme}, me=self.party, peer=peer
        )
        if diff:
            raise ParameterMismatch(f"setup refused: {diff[0]}. Fix: give both parties one plan")
        if self.settings.mode is Mode.PLAINTEXT:
            self.peer = PlainCipher()
            return
        try:
            public = self.suite.public_key(key)
        except ValueError as exc:
            raise ProtocolError(f"the other party's public key is invalid: {exc}") from exc
        if public.n_bits != self.settings.key_bits:
            raise ProtocolError(
                f"peer key has {public.n_bits} bits, agreed {self.settings.key_bits}"
            )
        parts = CipherParts(public, self.scales, self.kernels, randomness=self._source(public))
        self.peer = self.suite.cipher(parts)

    def _peer(self) -> LayerCipher:
        if self.peer is None:
            raise ProtocolError(f"party '{self.party}': no peer key yet: setup first")
        return self.peer

    def counts(self) -> dict[str, OpCounts]:
        """Paillier operations so far, under this party's key and under the peer's."""
        out = {"own_key": self.own.counts}
        if self.peer is not None:
            out["peer_key"] = self.peer.counts
        return out

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Blocks until every background randomness pool holds a full stock (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        for pool in self._pools:
            while pool.available() < pool.size and time.monotonic() < deadline:
                time.sleep(0.05)

    def close(self) -> None:
        """Stops background workers (randomness pools, kernel processes)."""
        for pool in self._pools:
            pool.close()
        self.kernels.close()


class ActiveShare(_Side):
    """E's side: its key pair and share ``U`` of ``W_B``."""

    def __init__(
        self,
        *,
        u: IntArray,
        settings: LayerSettings,
        keys: KeyPair | None,
        allow_plaintext: bool = False,
        party: str = "E",
        rotation: IntArray | None = None,
        floor: SecurityFloor = SecurityFloor(),
        executor: PartyExecutor | None = None,
    ) -> None:
        """``rotation``: E's secret ``Q`` of a fresh job (:func:`initial_rotation`); ``u``
        is then replaced by ``U0`` at setup. Without it ``u`` is the share to use (a loaded
        shard, or a placeholder that a resumed run overwrites from its checkpoint)."""
        super().__init__(
            settings, keys, allowed=allow_plaintext, party=party, floor=floor, executor=executor
        )
        self.u = np.asarray(u, dtype=object)
        self.rotation = rotation
        self.sgd = ShareSgd(settings.sgd)
        self._u_current_at_peer = False
        self._vt: Sealed | None = None

    def params(self) -> dict[str, int | float | str]:
        """E's side of the parameter agreement."""
        return self.settings.agreed(self.u.shape)

    def init_payload(self) -> bytes:
        """Setup at E: a fresh ``[[Qᵀ]]_E`` if this is a fresh job (a rotation), else empty."""
        if self.rotation is None:
            return b""
        return self.own.dump(self.own.encrypt(np.ascontiguousarray(self.rotation.T)), fresh=True)

    def accept_init(self, data: bytes) -> None:
        """Setup at E: ``U0 = W_B(0) - M`` from P's ``[[W_B(0)ᵀ - Mᵀ]]_E``.

        Raises:
            ProtocolError: for a missing or malformed reply to a fresh job's ``[[Qᵀ]]_E``.
        """
        if self.rotation is None:
            return
        d, h = self.u.shape
        if not data:
            raise ProtocolError("P sent no initial share: it resumes while E starts afresh")
        vec = self.own.load(data, rows=h, length=d, what="[[W_B(0)ᵀ - Mᵀ]]")
        self.u = np.ascontiguousarray(self.own.decrypt(vec, d).T)
        self.rotation = None
        self._u_current_at_peer = False

    def u_payload(self) -> bytes:
        """A fresh ``[[U]]_E`` if ``U`` changed since P last received it, else empty."""
        if self._u_current_at_peer:
            return b""
        self._u_current_at_peer = True
        return self.own.dump(self.own.encrypt(self.u), fresh=True)

    def decode_zb(self, data: bytes, m: int) -> NDArray[np.float64]:
        """Step 1 at E: ``z_B = b·W_B`` (m x h) from ``[[B·(U+V)]]_E``."""
        h = self.u.shape[1]
        vec = self.own.load(data, rows=m, length=h, what="[[z_B]]")
        s = self.scales
        return dequantise(self.own.decrypt(vec, h), s.zb_bits, bound_bits=s.value_bits, what="z_B")

    def accept_vt(self, data: bytes) -> None:
        """Step 1 at E: P's fresh ``[[Vᵀ]]_P`` (h x d) for this step's backward."""
        d, h = self.u.shape
        self._vt = self._peer().load(data, rows=h, length=d, what="[[Vᵀ]]")

    def backward_payload(
        self, delta: NDArray[np.floating], embedding_delta: NDArray[np.floating] | None = None
    ) -> tuple[bytes, bytes]:
        """Step 2: fresh ``[[G]]_E`` and re-randomised ``[[D·W_Bᵀ]]_P`` (per-user ``δ``).

        ``embedding_delta``: the ``δ`` that P's embedding gradient ``D`` is made of, when E's
        label defence changed it (:mod:`vfl.training.defences`); ``G`` always uses ``delta``.
        """
        if self._vt is None:
            raise ProtocolError("backward before a training forward: no [[Vᵀ]]_P yet")
        s, peer = self.scales, self._peer()
        for_p = delta if embedding_delta is None else embedding_delta
        g = quantise(np.asarray(delta), s.g_bits, s.g_bound, "δ (dL/dz_B per user, at E)")
        d = quantise(np.asarray(for_p), s.d_bits, s.g_bound, "δ (dL/dz_B per user, at E)")
        enc_db = peer.add_plain(peer.dot(d, self._vt, bits=s.d_bits + 5), int_matmul(d, self.u.T))
        self._vt = None
        return self.own.dump(self.own.encrypt(g), fresh=True), peer.dump(enc_db, fresh=False)

    def apply_update(self, data: bytes) -> None:
        """Step 4: decrypt the gradient share ``Bᵀ·G - R`` and step ``U``."""
        d, h = self.u.shape
        vec = self.own.load(data, rows=d, length=h, what="[[bᵀδ - R]]")
        self.u = self.sgd.step(self.u, self.own.decrypt(vec, h))
        self._u_current_at_peer = False


class PassiveShare(_Side):
    """P's side: its key pair, share ``V`` of ``W_B`` and the latest ``[[U]]_E``."""

    def __init__(
        self,
        *,
        v: IntArray,
        settings: LayerSettings,
        keys: KeyPair | None,
        allow_plaintext: bool = False,
        party: str = "P",
        noise_seed: int | None = None,
        factor: IntArray | None = None,
        floor: SecurityFloor = SecurityFloor(),
        executor: PartyExecutor | None = None,
    ) -> None:
        """``noise_seed``: P's own secret seed of its embedding noise (fresh if None).
        ``factor``: P's secret ``G`` of a fresh job (:func:`initial_factor`); ``v`` is then
        replaced by ``V0`` at setup, and no forward is served before."""
        super().__init__(
            settings, keys, allowed=allow_plaintext, party=party, floor=floor, executor=executor
        )
        self.v = np.asarray(v, dtype=object)
        self.factor = factor
        self.sgd = ShareSgd(settings.sgd)
        seed = secrets.randbits(63) if noise_seed is None else noise_seed
        self.noise = EmbeddingNoise(settings.embedding_noise, seed)
        self._u: Sealed | None = None
        self._b: IntArray | None = None

    def params(self) -> dict[str, int | float | str]:
        """P's side of the parameter agreement."""
        return self.settings.agreed(self.v.shape)

    def init_reply(self, data: bytes) -> bytes:
        """Setup at P: ``[[W_B(0)ᵀ - Mᵀ]]_E`` (re-randomised) for E's ``[[Qᵀ]]_E``; ``V = M``.

        Empty ``data`` (a resumed run or a loaded shard) keeps ``V`` and answers empty.

        Raises:
            ProtocolError: if E starts a fresh job while P resumes, or the payload is malformed.
        """
        if not data:
            return b""
        if self.factor is None:
            raise ProtocolError("E starts afresh (sent [[Qᵀ]]) while P resumes its share V")
        d, _ = self.v.shape
        peer = self._peer()
        enc_qt = peer.load(data, rows=d, length=d, what="[[Qᵀ]]")
        masked = self.settings.mode is Mode.ENCRYPTED
        v0, reply = masked_initial_share(self.factor, enc_qt, peer, self.scales, masked=masked)
        self.v, self.factor = v0, None
        return peer.dump(reply, fresh=False)

    def forward_payload(
        self,
        b: NDArray[np.floating],
        enc_u: bytes,
        *,
        train: bool,
        step: int = 0,
        users: NDArray[np.integer] | None = None,
    ) -> tuple[bytes, bytes]:
        """Step 1 at P: re-randomised ``[[B̃·(U+V)]]_E`` and, if training, fresh ``[[Vᵀ]]_P``.

        ``B̃ = round(b̃·2^f_b)`` with ``b̃`` P's embedding after its protection noise for
        ``step`` and ``users`` (aligned positions, ``0..m-1`` if None); ``b̃ = b`` without.
        """
        s, peer = self.scales, self._peer()
        d, h = self.v.shape
        if self.factor is not None:
            raise ProtocolError("forward before the initial shares of W_B were made at setup")
        if len(b) > s.max_users:
            raise ProtocolError(f"{len(b)} users in one step; the masks allow {s.max_users}")
        if enc_u:
            self._u = peer.load(enc_u, rows=d, length=h, what="[[U]]")
        if self._u is None:
            raise ProtocolError("forward before E sent [[U]]_E")
        at = np.arange(len(b)) if users is None else np.asarray(users)
        noisy = self.noise.apply(b, step=step, users=at, train=train)
        big_b = quantise(noisy, s.b_bits, 1.0, "b (P's embedding)")
        enc_zb = peer.add_plain(
            peer.dot(big_b, self._u, bits=s.b_bits + 1), int_matmul(big_b, self.v)
        )
        self._b = big_b if train else None
        if not train:
            return peer.dump(enc_zb, fresh=False), b""
        enc_vt = self.own.encrypt(np.ascontiguousarray(self.v.T))
        return peer.dump(enc_zb, fresh=False), self.own.dump(enc_vt, fresh=True)

    def backward(self, enc_g: bytes, enc_db: bytes) -> tuple[bytes, NDArray[np.float64]]:
        """Step 3: E's masked gradient share, P's own share update, and ``dL/db`` (m x d).

        Both payloads are parsed and ``dL/db`` is decoded and bound-checked before anything
        changes: a malformed, foreign or over-bound message raises and leaves ``V``, the
        momentum buffer and the pending forward as they were.

        Raises:
            ProtocolError: without a matching training forward, or for a malformed payload.
            OverflowDetected: if a decoded ``|dL/db|`` reaches ``2^value_bits``.
        """
        if self._b is None:
            raise ProtocolError("backward without a matching training forward")
        s, peer, big_b = self.scales, self._peer(), self._b
        d, h = self.v.shape
        g = peer.load(enc_g, rows=len(big_b), length=h, what="[[G]]")
        db = self.own.load(enc_db, rows=len(big_b), length=d, what="[[dL/db]]")
        d_b = dequantise(self.own.decrypt(db, d), s.db_bits, bound_bits=s.value_bits, what="dL/db")
        check_embedding_gradient(d_b, len(big_b), d)
        grad = peer.dot(np.ascontiguousarray(big_b.T), g, bits=s.b_bits + 1)  # [[Bᵀ·G]]_E
        if self.settings.mode is Mode.ENCRYPTED:
            mask = uniform_mask(self.v.shape, s.mask_bits)
        else:
            mask = np.zeros(self.v.shape, dtype=object)  # plaintext mode: no masks
        masked = peer.add_plain(grad, -mask)
        reply = peer.dump(masked, fresh=False)
        self.v = self.sgd.step(self.v, mask)  # the only mutation, after every check
        self._b = None
        return reply, d_b


def check_embedding_gradient(d_b: NDArray[np.float64], m: int, d: int) -> None:
    """``dL/db`` must be finite with one row of ``d`` per user of the step.

    Raises:
        ProtocolError: naming the shape found and the shape expected.
    """
    if d_b.shape != (m, d) or not np.isfinite(d_b).all():
        raise ProtocolError(f"[[dL/db]]: decoded shape {d_b.shape}, expected finite ({m}, {d})")
