"""Bottom models: each party turns its own raw features into an intermediate representation.

* P's bottom model maps per-user payment features to ``b`` (m x d).
* E's bottom model maps (user behaviour, item) pairs to ``e``: a user tower and an item tower
  whose outputs are concatenated with their element-wise product, the product being the
  matrix-factorisation signal NCF relies on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vfl.models.layers import TabularEncoder, mlp


class PassiveBottom(nn.Module):
    """P's bottom model: payment features -> ``b`` with entries in ``(-1, 1)``.

    The tanh output bounds every entry of ``b``, which keeps fixed-point encodings of it in a
    known range.
    """

    def __init__(
        self, n_numeric: int, cardinalities: Sequence[int], hidden: Sequence[int], out_dim: int
    ) -> None:
        super().__init__()
        self.encoder = TabularEncoder(n_numeric, cardinalities)
        self.net = mlp(self.encoder.out_dim, hidden, out_dim)
        self.out_dim = out_dim

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """``b = tanh(MLP([numeric, embeddings]))``."""
        return torch.tanh(self.net(self.encoder(numeric, categorical)))


class Tower(nn.Module):
    """One entity's tower: optional id embedding plus encoded features -> ``dim``."""

    def __init__(
        self,
        n_ids: int | None,
        n_numeric: int,
        cardinalities: Sequence[int],
        hidden: Sequence[int],
        dim: int,
    ) -> None:
        super().__init__()
        self.id_embedding = nn.Embedding(n_ids, dim) if n_ids else None
        if self.id_embedding is not None:
            nn.init.normal_(self.id_embedding.weight, std=0.05)
        self.encoder = TabularEncoder(n_numeric, cardinalities)
        self.net = mlp(self.encoder.out_dim, hidden, dim) if self.encoder.out_dim else None
        if self.id_embedding is None and self.net is None:
            raise ValueError("a tower needs an id embedding or at least one feature")

    def forward(
        self, ids: torch.Tensor, numeric: torch.Tensor, categorical: torch.Tensor
    ) -> torch.Tensor:
        """Sum of the id embedding and the feature MLP (whichever exist)."""
        out = self.id_embedding(ids) if self.id_embedding is not None else 0.0
        if self.net is not None:
            out = out + self.net(self.encoder(numeric, categorical))
        return out  # type: ignore[return-value]


class ActiveBottom(nn.Module):
    """E's bottom model: ``e = [u, v, u * v]`` from a user tower ``u`` and an item tower ``v``."""

    def __init__(self, *, user_tower: Tower, item_tower: Tower, dim: int) -> None:
        super().__init__()
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.out_dim = 3 * dim

    def forward(
        self, user: tuple[torch.Tensor, ...], item: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        """``user`` and ``item`` are ``(ids, numeric, categorical)`` triples, one row per pair."""
        return self.combine(self.user_tower(*user), self.item_tower(*item))

    @staticmethod
    def combine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``e = [u, v, u * v]`` from per-row user and item vectors."""
        return torch.cat([u, v, u * v], dim=1)
