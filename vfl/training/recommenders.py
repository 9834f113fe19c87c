"""The three models ``vfl compare`` trains on one split, behind one small interface.

* :class:`EAloneRecommender` -- E's data only: the user tower sees E's behaviour features.
* :class:`CentralisedRecommender` -- one model on the joined data: the same network, with P's
  payment features appended to E's in the user tower (the upper bound no federation can beat).
* :class:`SplitRecommender` -- E's side of the plaintext split network: P's bottom model runs in
  P's process and only ``b`` and ``dL/db`` cross, as messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from vfl.config.job import ModelConfig, TrainConfig
from vfl.kinds import BottomInputs, load_kind
from vfl.models.bottom import ActiveBottom
from vfl.models.head import InteractiveLayer, PartnerTerms, PassiveWeight, TopModel
from vfl.models.sequence import HistoryAttention, UserSequences
from vfl.protocol.plain_split import PassivePeer
from vfl.training.defences import CutGradientDefence, NoDefence
from vfl.training.inputs import Batch, TableTensors


class Recommender(Protocol):
    """What the training loop needs from a model."""

    name: str

    def train_step(self, step: int, batch: Batch) -> float:
        """One optimiser step on ``batch``; returns the mean loss."""

    def predict(self, step: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Probabilities for ``items[i, j]`` shown to ``users[i]`` -> same shape as ``items``."""


@dataclass(frozen=True)
class ActiveInputs:
    """E's feature tensors: users in aligned order, items in catalogue order.

    ``sequences``: the training positives ``(users, items)`` grouped by user in time order
    (:attr:`~vfl.data.splits.RecSplit.train_users` / ``train_items``), from which the
    histories are cut; None when a trained head's state will supply them.
    """

    users: TableTensors
    items: TableTensors
    sequences: tuple[np.ndarray, np.ndarray] | None = None
    kind: str = "ecommerce"  # the kind of organisation (vfl.kinds) whose bottom model E builds


class ActiveHead(nn.Module):
    """Everything E trains: bottom towers, interactive layer (``W_E``, bias) and top model.

    With ``history_length > 0`` the user vector is ``u + s(u, i)``, the tower's output plus
    the attention summary of the user's recent training items (:mod:`vfl.models.sequence`);
    the sequences are buffers, so they travel with the head's checkpoints and exported shard.
    With ``n_partners > 0`` the head also holds each partner's "does not know this user"
    vector ``a_k`` (:class:`~vfl.models.head.PartnerTerms`, registered last so that the
    other parameters keep their order and initial values).
    """

    def __init__(
        self, inputs: ActiveInputs, cfg: ModelConfig, *, n_users: int, n_partners: int = 0
    ) -> None:
        super().__init__()
        u, i = inputs.users, inputs.items
        self.inputs = inputs
        self.n_items = int(i.numeric.shape[0])
        bottom = load_kind(inputs.kind).bottom(BottomInputs(u, i, n_users, self.n_items), cfg)
        if not isinstance(bottom, ActiveBottom):
            raise TypeError(f"kind '{inputs.kind}' builds no ActiveBottom for E's head")
        self.bottom = bottom
        self.attention = (
            HistoryAttention(cfg.embedding_dim, cfg.history_length) if cfg.history_length else None
        )
        empty = np.empty(0, np.int64)
        seq_users, seq_items = inputs.sequences or (empty, empty)
        self.sequences = UserSequences(
            seq_users, seq_items, n_users=n_users, n_items=self.n_items, length=cfg.history_length
        )
        self.interactive = InteractiveLayer(self.bottom.out_dim, cfg.interactive_out)
        self.top = TopModel(cfg.interactive_out, cfg.top_hidden)
        self.partners = PartnerTerms(n_partners, cfg.interactive_out) if n_partners else None

    def logits(
        self,
        row_user: torch.Tensor,
        row_item: torch.Tensor,
        z_b: torch.Tensor | None,
        *,
        train: bool = False,
    ) -> torch.Tensor:
        """Logit of each (aligned user, item) row, given ``z_b = b·W_B`` per row or None.

        ``train``: the rows are a training step's, so each positive sees only its prefix
        (:class:`~vfl.models.sequence.UserSequences`); otherwise every row the whole history.
        """
        every_item = torch.arange(self.n_items)
        v_all = self.bottom.item_tower(*self.inputs.items.gather(every_item))
        # F.embedding, not indexing: its CPU backward sums duplicates in a fixed order, so a
        # resumed run stays bit-identical to the uninterrupted one on any thread count.
        v = nn.functional.embedding(row_item, v_all)
        u = self.bottom.user_tower(*self.inputs.users.gather(row_user))
        if self.attention is not None:
            at = self.sequences.positions(row_user, row_item, train=train)
            hist = self.sequences.history(row_user, at)
            keep = hist != self.n_items
            padded = torch.cat([v_all, torch.zeros_like(v_all[:1])])
            u = u + self.attention(nn.functional.embedding(hist, padded), keep, v)
        logit: torch.Tensor = self.top(self.interactive(self.bottom.combine(u, v), z_b))
        return logit

    def item_vectors(self) -> torch.Tensor:
        """The item tower's output for every catalogue item (n_items x dim)."""
        every_item = torch.arange(self.n_items)
        v_all: torch.Tensor = self.bottom.item_tower(*self.inputs.items.gather(every_item))
        return v_all

    def user_logits(
        self, user: int, items: torch.Tensor, z_b: torch.Tensor, v_all: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`logits` of one user's rows over ``items`` when scoring (the whole history),
        given ``z_b`` (h) and :meth:`item_vectors`: the user's vector and history once."""
        one = torch.tensor([user])
        v = nn.functional.embedding(items, v_all)
        u = self.bottom.user_tower(*self.inputs.users.gather(one)).expand(len(items), -1)
        if self.attention is not None:
            at = self.sequences.positions(one, items[:1], train=False)
            hist = self.sequences.history(one, at)[0]
            padded = torch.cat([v_all, torch.zeros_like(v_all[:1])])
            u = u + self.attention.one_history(padded[hist], hist != self.n_items, v)
        z = z_b.expand(len(items), -1)
        logit: torch.Tensor = self.top(self.interactive(self.bottom.combine(u, v), z))
        return logit


def _adam(params: list[nn.Parameter], train: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=train.learning_rate, weight_decay=train.weight_decay)


def passive_optimizer(bottom: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """A passive party's Adam over its bottom model, at ``train.passive_lr``."""
    return torch.optim.Adam(
        bottom.parameters(), lr=train.passive_lr, weight_decay=train.weight_decay
    )


def _bce(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``Σ_r w_r · l_r``: the per-user mean BCE averaged over users (:mod:`.inputs`)."""
    rows = nn.functional.binary_cross_entropy_with_logits(
        logits, torch.as_tensor(batch.labels), reduction="none"
    )
    return (rows * torch.as_tensor(batch.row_weight)).sum()


class StepCache:
    """Per-user values P computed for **every** aligned user at one step, asked for once.

    An evaluation must not tell P which users E scores (those with a held-out item are
    those with 3 or more positives): the first request at a step fetches all ``n_users``
    in fixed chunks of ``chunk``, and later requests at that step are served from here.
    """

    def __init__(
        self, fetch: Callable[[int, np.ndarray], np.ndarray], n_users: int, chunk: int
    ) -> None:
        self.fetch, self.n_users, self.chunk = fetch, n_users, chunk
        self._step: int | None = None
        self._values: np.ndarray | None = None

    def rows(self, step: int, users: np.ndarray) -> np.ndarray:
        """The cached values of ``users`` at ``step`` (fetching every user on a new step)."""
        if self._step != step or self._values is None:
            everyone = np.arange(self.n_users, dtype=np.int64)
            parts = [
                self.fetch(step, everyone[s : s + self.chunk])
                for s in range(0, self.n_users, self.chunk)
            ]
            self._step, self._values = step, np.concatenate(parts)
        return self._values[np.asarray(users, np.int64)]

    def latest(self) -> np.ndarray | None:
        """Every user's values at the last step fetched (None before any)."""
        return self._values


EVAL_FETCH_USERS = 512  # users per evaluation request to P (at most the masks' max_users)


def _rows(users: np.ndarray, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten a candidate matrix into (user, item) row tensors."""
    row_user = np.repeat(users, items.shape[1])
    return torch.as_tensor(row_user), torch.as_tensor(items.ravel())


class HeadRecommender:
    """A single-process model: E's head on some user features (E alone or joined)."""

    def __init__(
        self, name: str, inputs: ActiveInputs, cfg: ModelConfig, train: TrainConfig, *, n_users: int
    ) -> None:
        self.name = name
        self.head = ActiveHead(inputs, cfg, n_users=n_users)
        self.optimizer = _adam(list(self.head.parameters()), train)

    def train_step(self, step: int, batch: Batch) -> float:
        """Forward, BCE loss, backward, Adam step."""
        self.head.train()
        row_user = torch.as_tensor(batch.users[batch.row_user])
        logits = self.head.logits(row_user, torch.as_tensor(batch.row_item), None, train=True)
        loss = _bce(logits, batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def predict(self, step: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Sigmoid of the logits, shaped like ``items``."""
        self.head.eval()
        row_user, row_item = _rows(users, items)
        return (
            torch.sigmoid(self.head.logits(row_user, row_item, None)).numpy().reshape(items.shape)
        )


def joined_users(e_users: TableTensors, p_users: TableTensors) -> TableTensors:
    """Users with E's and P's features side by side (only a centralised model may do this)."""
    return TableTensors(
        numeric=torch.cat([e_users.numeric, p_users.numeric], dim=1),
        categorical=torch.cat([e_users.categorical, p_users.categorical], dim=1),
        n_numeric=e_users.n_numeric + p_users.n_numeric,
        cardinalities=e_users.cardinalities + p_users.cardinalities,
    )


class SplitRecommender:
    """E's side of the plaintext split network; P is reached only through ``peer``."""

    name = "split_plaintext"

    def __init__(
        self,
        inputs: ActiveInputs,
        cfg: ModelConfig,
        train: TrainConfig,
        *,
        n_users: int,
        peer: PassivePeer,
        defence: CutGradientDefence | None = None,
    ) -> None:
        self.head = ActiveHead(inputs, cfg, n_users=n_users)
        self.w_b = PassiveWeight(cfg.passive_out, cfg.interactive_out)
        self.peer = peer
        self.defence = defence or NoDefence()
        self._b = StepCache(
            lambda step, users: peer.forward(step, users, train=False), n_users, EVAL_FETCH_USERS
        )
        self.optimizer = _adam(list(self.head.parameters()), train)
        # Plain SGD on W_B, as in the encrypted protocol (whose share updates must stay linear
        # in the gradient), so that both modes train the same model.
        self.wb_optimizer = torch.optim.SGD(
            self.w_b.parameters(),
            lr=train.wb_learning_rate,
            momentum=train.wb_momentum,
            weight_decay=train.wb_weight_decay,
        )

    def train_step(self, step: int, batch: Batch) -> float:
        """Steps 1-3 of :mod:`vfl.protocol.plain_split`; P's gradient through the defence."""
        self.head.train()
        b = torch.tensor(self.peer.forward(step, batch.users, train=True))
        z_user = self.w_b(b.requires_grad_(False)).detach().requires_grad_(True)
        local = torch.as_tensor(batch.row_user)
        logits = self.head.logits(
            torch.as_tensor(batch.users)[local],
            torch.as_tensor(batch.row_item),
            z_user[local],
            train=True,
        )
        loss = _bce(logits, batch)
        self.optimizer.zero_grad()
        self.wb_optimizer.zero_grad()
        loss.backward()
        if z_user.grad is None:  # cannot happen for a leaf that requires grad
            raise RuntimeError("no gradient for z_B")
        delta = z_user.grad
        self.w_b.weight.grad = (b.T @ delta).to(self.w_b.weight.dtype)  # bᵀδ, exact
        noisy = torch.as_tensor(self.defence(delta.numpy().astype(np.float64), batch.secret))
        d_b = noisy.to(b.dtype) @ self.w_b.weight.detach().T  # δ̂·W_Bᵀ, before the step
        self.optimizer.step()
        self.wb_optimizer.step()
        self.peer.backward(step, d_b.numpy())
        return float(loss.detach())

    @torch.no_grad()
    def predict(self, step: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``b`` of every aligned user asked once per step (:class:`StepCache`), then scores."""
        self.head.eval()
        b = torch.as_tensor(self._b.rows(step, users))
        local = torch.as_tensor(np.repeat(np.arange(len(users)), items.shape[1]))
        row_user, row_item = _rows(users, items)
        logits = self.head.logits(row_user, row_item, self.w_b(b[local]))
        return torch.sigmoid(logits).numpy().reshape(items.shape)
