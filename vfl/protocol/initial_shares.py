"""The initial shares of ``W_B``: a Xavier-normal weight that neither party knows any part of.

``W_B(0) = Q·G`` with

* ``Q`` (d x d) a Haar-random orthogonal matrix drawn by **E** from its own secret seed, and
* ``G`` (d x h) Xavier-normal (``N(0, 2/(d+h))`` entries) drawn by **P** from its own seed,

computed under E's key in the setup round trip, then split with a mask ``M`` of P's:

1. E -> P: fresh ``[[Qᵀ]]_E`` (``Q`` at ``2^init_bits``), in ``SetupIns``.
2. P: ``[[W_B(0)ᵀ - Mᵀ]]_E = Gᵀ·[[Qᵀ]]_E - Mᵀ`` (``G`` at ``2^(w_bits - init_bits)``, so the
   product is at the shares' scale ``2^w_bits`` exactly), re-randomised, in ``SetupRes``;
   P keeps ``V0 = M``, uniform in ``[-2^k, 2^k]``, ``k = mask_bits``.
3. E decrypts ``U0 = W_B(0) - M``.

Why neither party's view is correlated with ``W_B(0)`` before the first ``z_B``:

* E holds ``Q`` and ``U0``. ``|W_B(0)_ij| <= ‖G_:j‖ < 2^(k - sigma)`` (P checks it; rows of
  ``Q`` are unit vectors), so ``U0 = W_B(0) - M`` is within statistical distance
  ``2^-sigma`` per entry of ``-M``, which is independent of ``W_B(0)``. And for iid Gaussian
  ``G``, ``Q·G`` has the law of ``G`` for every fixed orthogonal ``Q`` (the isotropic
  Gaussian is rotation invariant), so ``W_B(0)`` is independent of ``Q`` too (``Q`` is
  rounded to ``2^-init_bits``: ``QᵀQ = I`` to about ``2^-27``). E's first ``z_B = b·W_B(0)``
  therefore tells E about ``b`` only what ``b·W`` for an unknown Gaussian ``W`` would.
* P holds ``G``, ``M = V0`` and ciphertexts under E's key. Given ``G``, ``W_B(0) = Q·G`` is
  uniform on the orbit ``{Q·G : Q orthogonal}``: ``E[W_B(0) | P's view] = E[Q]·G = 0``, so no
  entry is linearly predictable. P learns the Gram matrix ``W_B(0)ᵀW_B(0) = GᵀG`` (column
  norms and angles), which adds nothing to what the inner products of the ``dL/db = δ·W_Bᵀ``
  rows it receives show anyway: ``dL/db·dL/dbᵀ = δ·GᵀG·δᵀ`` whatever ``Q`` is.

Why P may not simply draw ``W_B(0)`` in the clear: from its first ``dL/db = δ·W_B(0)ᵀ`` it
would solve ``δ = dL/db·(W_B(0)ᵀ)⁺``, then know ``bᵀδ`` and so ``W_B(1)``, and by induction
every ``W_B(t)`` and every ``δ`` (E's label residuals). The earlier scheme (each party drew
half of the variance) let each share explain half of ``W_B(0)``'s variance.

Plaintext mode runs the same messages with ``M = 0`` (no masks, like ``R``), so both modes
start from the same ``W_B(0) = Q·G`` for the same seeds.
"""

from __future__ import annotations

import numpy as np

from vfl.crypto.encoding import IntArray, quantise
from vfl.errors import ProtocolError
from vfl.protocol.ciphers import LayerCipher, Sealed
from vfl.protocol.fixed_point import SecureScales, int_matmul, uniform_mask

__all__ = ["initial_factor", "initial_rotation", "initial_weight", "masked_initial_share"]

FACTOR_BOUND = 64.0  # |G| entries above this are refused (more than 45 deviations out)


def initial_rotation(d: int, scales: SecureScales, rng: np.random.Generator) -> IntArray:
    """E's Haar-random orthogonal ``Q`` (d x d) at ``2^init_bits``, from E's own seed.

    QR of a Gaussian matrix with the signs of ``R``'s diagonal moved into ``Q`` (Mezzadri,
    "How to generate random matrices from the classical compact groups", 2007).
    """
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))[None, :]
    return quantise(q, scales.init_bits, 1.0 + 1e-9, "initial rotation Q")


def initial_factor(d: int, h: int, scales: SecureScales, rng: np.random.Generator) -> IntArray:
    """P's Xavier-normal ``G`` (d x h, std ``sqrt(2/(d+h))``) at ``2^(w_bits - init_bits)``."""
    std = np.sqrt(2.0 / (d + h))
    bits = scales.w_bits - scales.init_bits
    return quantise(rng.normal(0.0, std, (d, h)), bits, FACTOR_BOUND, "initial factor G")


def initial_weight(rotation: IntArray, factor: IntArray, scales: SecureScales) -> np.ndarray:
    """``W_B(0) = Q·G`` as floats -- for reference runs and tests only (nobody holds both)."""
    return int_matmul(rotation, factor).astype(float) / 2.0**scales.w_bits


def masked_initial_share(
    factor: IntArray, enc_qt: Sealed, peer: LayerCipher, scales: SecureScales, *, masked: bool
) -> tuple[IntArray, Sealed]:
    """Step 2 at P: ``(V0, [[W_B(0)ᵀ - V0ᵀ]]_E)`` from ``[[Qᵀ]]_E`` (not yet re-randomised).

    ``V0 = M`` uniform in ``[-2^mask_bits, 2^mask_bits]`` (zero when not ``masked``).

    Raises:
        ProtocolError: if a column norm of ``G`` leaves less than ``2^sigma`` of headroom.
    """
    d, h = factor.shape
    limit = 2.0 ** (scales.mask_bits - scales.sigma - scales.w_bits)
    g = factor.astype(float) / 2.0 ** (scales.w_bits - scales.init_bits)
    norms = np.sqrt((g**2).sum(0))
    if float(np.max(norms, initial=0.0)) >= limit:
        raise ProtocolError(f"initial factor G: a column norm reaches {limit}, the mask bound")
    mask = uniform_mask((d, h), scales.mask_bits) if masked else np.zeros((d, h), dtype=object)
    bits = scales.w_bits - scales.init_bits + 7  # |G| < 2^6 at 2^(w_bits - init_bits)
    product = peer.dot(np.ascontiguousarray(factor.T), enc_qt, bits=bits)
    return mask, peer.add_plain(product, np.ascontiguousarray(-mask.T))
