"""Label protection at the cut layer: what E does to ``δ`` before P's gradient is formed.

P receives ``∂L/∂b_u = δ_u·W_Bᵀ`` for every user ``u`` of a step. Without protection the
direction of ``δ_u`` follows the user's label residual (early in training the rows of a
step are nearly collinear, so the cosine with one reference user sorts users by label), see
Li et al., "Label Leakage and Protection in Two-party Split Learning", ICLR 2022
(arxiv.org/abs/2102.08504). A defence is a callable E's model applies to the per-user
``δ`` (m x h) of a step; the result is used **only** for P's embedding gradient. The weight
gradient ``bᵀδ`` of ``W_B``, which P only ever sees masked, keeps the exact ``δ``.

:class:`GaussianLabelNoise` (the default in the pilot):

1. ``g_u = m·δ_u``: user ``u``'s mean row gradient (the batcher weighs users equally).
2. Clip: ``ḡ_u = g_u · min(1, C / ‖g_u‖₂)``.
3. Noise: ``ĝ_u = ḡ_u + N(0, (sigma·C)² I_h)``, drawn from the step's secret (E's own stream).
4. Return ``ĝ / m``.

Changing every label of one user moves ``ḡ_u`` by at most ``2C`` in L2, so one release of
``ĝ_u`` is the Gaussian mechanism with noise multiplier ``sigma/2`` on that user's labels; an
epoch releases it once. :func:`label_epsilon` composes ``T`` such releases with the Rényi
accountant (Mironov 2017): ``ε(δ) = min_a T·a/(2·(sigma/2)²) + log(1/δ)/(a - 1)``. The bound is
for the user's own released gradients with the rest of the model held fixed; E's own layers
also train on the labels, and their influence on other users' later gradients is not
counted, so it is a per-release figure, not an end-to-end label-DP guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vfl.config.job import PrivacyConfig


class CutGradientDefence(Protocol):
    """Maps a step's per-user ``δ`` (m x h) to the ``δ`` P's embedding gradient is made of."""

    def __call__(self, delta: np.ndarray, secret: int) -> np.ndarray:
        """``secret``: the step's fresh value from E's own generator."""


class NoDefence:
    """``δ`` unchanged (``[privacy] label_noise = 0``)."""

    def __call__(self, delta: np.ndarray, secret: int) -> np.ndarray:
        """Returns ``delta`` itself."""
        return delta


@dataclass(frozen=True)
class GaussianLabelNoise:
    """Per-user clipping to ``clip`` and Gaussian noise of std ``multiplier · clip``."""

    multiplier: float
    clip: float

    def __call__(self, delta: np.ndarray, secret: int) -> np.ndarray:
        """Steps 1-4 of the module docstring."""
        m = max(len(delta), 1)
        g = np.asarray(delta, dtype=np.float64) * m
        norms = np.linalg.norm(g, axis=1, keepdims=True)
        clipped = g * np.minimum(1.0, self.clip / np.maximum(norms, 1e-300))
        noise = np.random.default_rng(secret).normal(0.0, self.multiplier * self.clip, g.shape)
        out: np.ndarray = (clipped + noise) / m
        return out


def label_defence(privacy: PrivacyConfig) -> CutGradientDefence:
    """The defence a plan's ``[privacy]`` section names."""
    if privacy.label_noise == 0:
        return NoDefence()
    return GaussianLabelNoise(multiplier=privacy.label_noise, clip=privacy.label_clip)


def label_epsilon(multiplier: float, releases: int, delta: float = 1e-5) -> float:
    """``ε`` of ``releases`` Gaussian releases at noise multiplier ``multiplier/2`` (RDP).

    Returns ``inf`` without noise. See the module docstring for what the figure covers.
    """
    if multiplier <= 0:
        return math.inf
    z = multiplier / 2.0
    alphas = [1.0 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))
    return min(releases * a / (2 * z * z) + math.log(1 / delta) / (a - 1) for a in alphas)
