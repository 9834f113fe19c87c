"""E's sequence-aware user representation: attention over the user's last training items.

For a row (user ``u``, candidate item ``i``) with history ``h_1 .. h_N`` (item vectors of
``u``'s last ``N`` training positives by time, the most recent last) and recency embeddings
``p_1 .. p_N``::

    a_j = (W_q v_i) · (h_j + p_j) / √dim         for every slot j holding an item
    s(u, i) = Σ_j softmax(a)_j · W_v (h_j + p_j)  (s = 0 for an empty history)

``v_i`` is the candidate's own item vector, so the summary is target-aware as in DIN (Zhou et
al., KDD 2018, arxiv.org/abs/1706.06978), and the recency embeddings make it depend on the
order of the items, as SASRec's positions do (Kang and McAuley, ICDM 2018,
arxiv.org/abs/1808.09781). Which items form the history of a row is :class:`UserSequences`'
job: only training positives, and for a training positive only those before it in time, as
SASRec trains (at evaluation the held-out items come after every training item). Plain
PyTorch: nothing here knows about encryption or parties.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn


class HistoryAttention(nn.Module):
    """Target-aware attention over ``length`` history slots of width ``dim`` (module doc)."""

    def __init__(self, dim: int, length: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(length, dim) * 0.05)
        self.query = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(
        self, history: torch.Tensor, keep: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """``s``: (r, dim) from history vectors (r, N, dim), a (r, N) mask of the slots to
        attend to, and the candidates' item vectors (r, dim)."""
        keys = history + self.position
        scores = torch.einsum("rd,rnd->rn", self.query(target), keys) * self.scale
        scores = scores.masked_fill(~keep, -1e9)  # finite: an empty row stays NaN-free
        weights = torch.softmax(scores, dim=1)
        weights = torch.where(keep.any(dim=1, keepdim=True), weights, torch.zeros_like(weights))
        return torch.einsum("rn,rnd->rd", weights, self.value(keys))

    def one_history(
        self, history: torch.Tensor, keep: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`forward` for r rows that share one history (N, dim) and mask (N,): the
        same ``s`` (r, dim), with the keys and values computed once (serving one user)."""
        keys = history + self.position
        scores = (self.query(target) @ keys.T) * self.scale
        scores = scores.masked_fill(~keep, -1e9)
        weights = torch.softmax(scores, dim=1)
        if not bool(keep.any()):
            weights = torch.zeros_like(weights)
        summary: torch.Tensor = weights @ self.value(keys)
        return summary


class UserSequences(nn.Module):
    """Each user's training positives in time order, and the history of a row from them.

    ``items[starts[u]:starts[u+1]]`` is user ``u``'s sequence ``x_0 .. x_{n_u - 1}``. The
    history at position ``t`` is ``x_{t-N} .. x_{t-1}`` (right-aligned, padded with
    ``n_items``):

    * scoring (evaluation, serving): ``t = n_u``, the user's last ``N`` training items;
    * training, a positive ``x_t``: its own prefix, as in SASRec's next-item objective, so a
      positive never sees itself or a later item;
    * training, the ``j``-th other row of user ``u`` in a step (a negative): ``t = j mod n_u``,
      spreading the negatives over the same positions as the positives (no random draw, so a
      resumed step replays the same rows).

    The arrays are buffers: they travel with the head's checkpoints and its exported shard
    (loading a state replaces them whatever their size, so a head built without the
    sequences can load a trained one).
    """

    def __init__(
        self, users: np.ndarray, items: np.ndarray, *, n_users: int, n_items: int, length: int
    ) -> None:
        super().__init__()
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        if len(users) and np.any(np.diff(users) < 0):
            raise ValueError("training positives must be grouped by user, in time order")
        counts = np.bincount(users, minlength=n_users)
        starts = np.concatenate([[0], np.cumsum(counts)])
        codes = users * n_items + items
        order = np.argsort(codes, kind="stable")
        self.n_items, self.length = n_items, length
        self.starts: torch.Tensor
        self.items: torch.Tensor
        self.codes: torch.Tensor
        self.code_rows: torch.Tensor
        self.register_buffer("starts", torch.as_tensor(starts))
        self.register_buffer("items", torch.tensor(items))
        self.register_buffer("codes", torch.as_tensor(codes[order]))
        self.register_buffer("code_rows", torch.as_tensor(order))

    def history(self, row_user: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """``(r, N)`` item indices of ``x_{t-N} .. x_{t-1}`` per row (``t = position``)."""
        start = self.starts[row_user]
        if len(self.items) == 0:
            return torch.full((len(row_user), self.length), self.n_items, dtype=torch.int64)
        idx = (start + position)[:, None] - self.length + torch.arange(self.length)
        valid = idx >= start[:, None]
        gathered = self.items[idx.clamp(min=0, max=len(self.items) - 1)]
        return torch.where(valid, gathered, torch.full_like(gathered, self.n_items))

    def positions(
        self, row_user: torch.Tensor, row_item: torch.Tensor, *, train: bool
    ) -> torch.Tensor:
        """``t`` of each row, by the rules in the class doc."""
        n_u = self.starts[row_user + 1] - self.starts[row_user]
        if not train or len(self.codes) == 0:
            return n_u if not train else torch.zeros_like(n_u)
        code = row_user * self.n_items + row_item
        at = torch.searchsorted(self.codes, code).clamp(max=len(self.codes) - 1)
        is_pos = self.codes[at] == code
        own = self.code_rows[at] - self.starts[row_user]
        other = torch.remainder(_rank_within_user(row_user, ~is_pos), n_u.clamp(min=1))
        return torch.where(is_pos, own, other)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Take the saved sequences whatever their size, then load as usual."""
        for name in ("starts", "items", "codes", "code_rows"):
            if prefix + name in state_dict:
                setattr(self, name, state_dict[prefix + name].clone())
        super()._load_from_state_dict(state_dict, prefix, *args)


def _rank_within_user(row_user: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """For each masked row, how many masked rows of the same user come before it (else 0)."""
    idx = torch.nonzero(mask).squeeze(1)
    rank = torch.zeros_like(row_user)
    if len(idx) == 0:
        return rank
    users = row_user[idx]
    order = torch.argsort(users, stable=True)
    sorted_users = users[order]
    first = torch.searchsorted(sorted_users, sorted_users)  # first row of each user's run
    ranks = torch.arange(len(idx)) - first
    rank[idx[order]] = ranks
    return rank
