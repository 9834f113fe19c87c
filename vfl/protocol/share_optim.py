"""SGD with momentum and weight decay on one additive share of ``W_B`` (SPEC §4).

Each party holds a share of the weight, ``W = U + V``, and a share of the weight gradient,
``g = g_E + g_P`` (``g_E = bᵀδ - R`` at E, ``g_P = R`` at P), and a share of the momentum
buffer, ``m = m_E + m_P``. Both apply the same linear update to their own shares:

1. ``d ← g_share + λ·w_share``             (weight decay ``λ``)
2. ``m_share ← d`` on the first step, else ``μ·m_share + d``   (momentum ``μ``)
3. ``w_share ← w_share - η·m_share``       (learning rate ``η``)

Summed over the two parties this is exactly ``torch.optim.SGD(lr=η, momentum=μ,
weight_decay=λ)`` on ``W`` (no dampening, no Nesterov), because every operation is linear.
Shares are integers at the public weight scale; multiplying by ``λ``, ``μ`` or ``η`` rounds
each share to the nearest integer (floats are dyadic rationals, so the product is exact
before rounding), an error of at most one unit of ``2^-w_bits`` in ``W`` per factor and step.
Nothing else is rounded and nothing crosses between the parties here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from vfl.crypto.encoding import IntArray
from vfl.protocol.fixed_point import scale_exact


@dataclass(frozen=True)
class ShareSgdConfig:
    """The SGD settings both parties apply to their shares of ``W_B`` (they must agree)."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if not (self.lr > 0 and 0 <= self.momentum < 1 and self.weight_decay >= 0):
            raise ValueError(
                f"W_B SGD needs lr > 0, 0 <= momentum < 1, weight_decay >= 0; got {self}"
            )


@dataclass
class ShareSgd:
    """One party's optimiser state: its share of the momentum buffer."""

    config: ShareSgdConfig
    buffer: IntArray | None = field(default=None, repr=False)
    steps: int = 0

    def step(self, share: IntArray, grad_share: IntArray) -> IntArray:
        """Returns the updated weight share given this party's gradient share (same scale)."""
        c = self.config
        d = grad_share
        if c.weight_decay:
            d = d + scale_exact(share, Fraction(c.weight_decay))
        if c.momentum and self.buffer is not None:
            d = scale_exact(self.buffer, Fraction(c.momentum)) + d
        if c.momentum:
            self.buffer = d
        self.steps += 1
        result: IntArray = share - scale_exact(d, Fraction(c.lr))
        return result
