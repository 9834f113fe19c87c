"""Embedding protection: noise P adds to its embedding before ``[[z_B]]_E`` is formed (SPEC §4).

E decrypts ``z_B = b·W_B``. ``W_B`` is square and of full rank, so ``z_B`` is an invertible
image of P's bottom output ``b``: an E that knows P's attributes for a few users can fit a
linear map from ``z_B`` to those attributes (:mod:`vfl.evaluation.attribute_attack`). With
multiplier ``s > 0`` (``[privacy] embedding_noise`` of the job plan, part of the agreed
parameters), P perturbs every row it multiplies::

    b̃_u = clip(b_u + s·ξ_u, -1, 1),   ξ_u ~ N(0, I_d),
    [[z̃_B]]_E = B̃·[[U]]_E + B̃·V = [[b̃·W_B]]_E = [[z_B + (b̃ - b)·W_B]]_E

so the noise reaches ``z_B`` under E's key, already multiplied by the ``W_B`` nobody knows.

Calibration. ``b`` is P's tanh output, ``|b_i| < 1``, so ``s`` is a multiple of the bound
of one entry of ``b`` (``‖b_u‖₂ < √d``, ``‖b_u - b_v‖₂ < 2√d``). P cannot calibrate in
``z_B`` units, since it never sees ``W_B`` or ``z_B``; noise in ``b`` units scales with
``W_B`` automatically (``‖z̃_u - z_u‖ <= ‖W_B‖₂·‖b̃_u - b_u‖``). Clipping keeps the
declared bound ``|b̃| <= 1`` of the fixed-point layer (:mod:`vfl.protocol.fixed_point`), so
masks and slots are unchanged; clipping and the product with ``W_B`` are post-processing.
As a formal bound, one release of ``b̃_u`` is (ε, δ)-DP in user ``u``'s features only for
``s >= 2√d·sqrt(2·ln(1.25/δ))/ε`` (Gaussian mechanism, ε < 1), far above useful
multipliers (``s = 1``, ``d = 16`` gives ε ≈ 39 at δ = 1e-5 per release): the protection
is an empirical one, and its effect is measured (``benchmarks/privacy_zb.py``), not assumed.

Where it applies: **training and evaluation both** (and serving, which uses the same
forward). E sees ``z̃_B`` in every forward, so protecting only evaluation would leave the
training forwards open; and noise at training time is what E's head then learns on
(noise injection), so its evaluation inputs have the distribution it was trained on.
In a training step the weight gradient is ``b̃ᵀδ`` (the ``b̃`` actually multiplied) and P
back-propagates ``∂L/∂b̃`` as ``∂L/∂b`` (the noise is additive; the clip is passed through).

Randomness. ``ξ_u`` is a pseudo-random function of P's own secret seed, the step, the
train/evaluate flag and the user's aligned position (NumPy's ``SeedSequence`` + PCG64):
fresh for every step, identical for a repeated request (E cannot average two answers for
one user at one step), and with no state to checkpoint, so the plaintext and encrypted modes
and a resumed run draw exactly the same noise from the same local seed. Residual risk: E
sees fresh noise at every step's forward, and late in training ``W_B`` and ``b`` change
little, so averaging ``T`` forwards of one user reduces the noise by about ``√T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

_STEP_SPACE = 2**62  # steps (possibly negative) map into SeedSequence's non-negative entropy


@dataclass(frozen=True)
class EmbeddingNoise:
    """P's embedding protection: multiplier ``s`` (in units of ``|b_i| < 1``) and its seed.

    ``seed`` is P's own secret: E must not know it (the job seed is public to both).
    """

    multiplier: float
    seed: int

    def __post_init__(self) -> None:
        if not (self.multiplier >= 0.0 and np.isfinite(self.multiplier)):
            raise ValueError(f"embedding noise multiplier must be finite and >= 0, got {self}")

    def draw(
        self, *, step: int, users: NDArray[np.integer], d: int, train: bool
    ) -> NDArray[np.float64]:
        """``s·ξ_u`` for each user position (m x d), a function of (seed, step, train, u)."""
        out = np.empty((len(users), d), dtype=np.float64)
        base = [self.seed, step % _STEP_SPACE, int(train)]
        for row, user in enumerate(np.asarray(users, dtype=np.int64).tolist()):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*base, user])))
            out[row] = rng.standard_normal(d)
        return self.multiplier * out

    def apply(
        self, b: NDArray[np.floating], *, step: int, users: NDArray[np.integer], train: bool
    ) -> NDArray[np.float64]:
        """``clip(b + s·ξ, -1, 1)``; ``b`` itself (as float64) when ``s = 0``."""
        plain: NDArray[np.float64] = np.asarray(b, dtype=np.float64)
        if self.multiplier == 0.0:
            return plain
        noise = self.draw(step=step, users=users, d=plain.shape[1], train=train)
        noisy: NDArray[np.float64] = np.clip(plain + noise, -1.0, 1.0)
        return noisy
