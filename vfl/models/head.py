"""E's interactive layer and top model.

Interactive layer: ``z = e·W_E + b·W_B + bias`` (e: m x p, b: m x d, z: m x h). The
``b·W_B`` term is passed in already computed (``z_b``) so that whoever evaluates it -- E in the
plaintext split, the secret-shared protocol later -- the layer stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vfl.models.layers import mlp


class InteractiveLayer(nn.Module):
    """``z = e·W_E + z_b + bias`` with ``z_b = b·W_B`` supplied by the caller."""

    def __init__(self, e_dim: int, out_dim: int) -> None:
        super().__init__()
        self.w_e = nn.Linear(e_dim, out_dim, bias=True)  # its bias is the layer's bias
        self.out_dim = out_dim

    def forward(self, e: torch.Tensor, z_b: torch.Tensor | None) -> torch.Tensor:
        """``z``; ``z_b=None`` means no passive party (the E-alone baseline)."""
        z: torch.Tensor = self.w_e(e)
        return z if z_b is None else z + z_b


class PassiveWeight(nn.Module):
    """``W_B`` (d x h) as a module, for the plaintext settings where one party may hold it."""

    def __init__(self, b_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(b_dim, out_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        """``z_b = b·W_B``."""
        return b @ self.weight


class TopModel(nn.Module):
    """``logit = MLP(ReLU(z))``; the loss is binary cross-entropy on the logit."""

    def __init__(self, in_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(in_dim, hidden, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """One logit per row."""
        logit: torch.Tensor = self.net(torch.relu(z))
        return logit.squeeze(1)
