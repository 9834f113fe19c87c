"""Building blocks shared by the bottom models."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """``Linear -> ReLU`` for each hidden width, then a final ``Linear`` to ``out_dim``."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def embedding_width(cardinality: int) -> int:
    """Embedding size for a categorical feature: grows like the 4th root, capped at 16."""
    return int(min(16, max(2, round(2 * math.sqrt(math.sqrt(cardinality))))))


class TabularEncoder(nn.Module):
    """Concatenate standardised numeric features with one embedding per categorical feature."""

    def __init__(self, n_numeric: int, cardinalities: Sequence[int]) -> None:
        super().__init__()
        self.n_numeric = n_numeric
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, embedding_width(card)) for card in cardinalities
        )
        self.out_dim = n_numeric + sum(embedding_width(c) for c in cardinalities)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """``(m, n_numeric)`` floats and ``(m, n_categorical)`` codes -> ``(m, out_dim)``."""
        parts = [numeric] + [emb(categorical[:, j]) for j, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=1)
