"""E's interactive layer and top model.

Interactive layer: ``z = e·W_E + b·W_B + bias`` (e: m x p, b: m x d, z: m x h). The
``b·W_B`` term is passed in already computed (``z_b``) so that whoever evaluates it -- E in the
plaintext split, the secret-shared protocol later -- the layer stays the same.

With several passive parties k the passed-in term is :class:`PartnerTerms`'
``Σ_k [ m_uk·(b_k·W_Bk) + (1 - m_uk)·a_k ]``: ``m_uk = 1`` when k knows user u (E's
knowledge from its PSI with k), and the learned vector ``a_k`` stands in for k's term
otherwise, so one model scores every user of E, whoever knows them.
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


class PartnerTerms(nn.Module):
    """``Σ_k [ m_uk·z_k[u] + (1 - m_uk)·a_k ]`` for the m users of a step (-> m x h).

    ``z_k`` (m_k x h, m_k = Σ_u m_uk) is ``b_k·W_Bk`` of the users k knows, computed
    elsewhere (the secret-shared layer, or its plaintext mode); ``a_k`` (h) is learned here.
    The ``a_k`` start at zero: while every user is known their gradient is zero, so a model
    of fully-known users trains exactly as one without them.
    """

    def __init__(self, n_partners: int, out_dim: int) -> None:
        super().__init__()
        self.absent = nn.Parameter(torch.zeros(n_partners, out_dim))

    def forward(self, known: Sequence[torch.Tensor], z: Sequence[torch.Tensor]) -> torch.Tensor:
        """The summed partner terms; ``known[k]`` (m,) bool says which rows ``z[k]`` fills.

        Raises:
            ValueError: the masks and row blocks do not match the partners.
        """
        if len(known) != len(z) or len(known) != self.absent.shape[0]:
            raise ValueError(
                f"{len(known)} masks and {len(z)} row blocks for {self.absent.shape[0]} partners"
            )
        total: torch.Tensor | None = None
        for k, (mask, z_k) in enumerate(zip(known, z, strict=True)):
            rows = torch.nonzero(mask, as_tuple=True)[0]
            if len(rows) != len(z_k):
                raise ValueError(f"partner {k}: {len(z_k)} rows of z for {len(rows)} known users")
            term = self.absent[k].unsqueeze(0).repeat(len(mask), 1).index_put((rows,), z_k)
            total = term if total is None else total + term
        if total is None:
            raise ValueError("no partner")
        return total


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
