"""E's recommender at serving time: its head over every E user, each partner's part from its
``z_B`` cache.

The head was trained over E's *user universe* (every E user in id order,
:class:`~vfl.party.partners.UserUniverse`), the partner term of user u being
``Σ_k m_uk·z_Bk[u] + (1 - m_uk)·a_k``: ``z_Bk = b_k·W_Bk`` when partner k knows the user
(from k's cache, row = k-aligned position) and the learned "k does not know this user"
vector ``a_k`` (``head.partners.absent[k]``) otherwise, summed over the partners in the
model's order as in training (:class:`~vfl.models.head.PartnerTerms`). So every E user is
answered, with no message to any partner, and each answer names its path: ``"vfl"`` (some
partner's features contributed, through the last refresh) or ``"e_only"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from vfl.config.party import PartyConfig
from vfl.config.plan import JobPlan
from vfl.data.tables import ActiveData
from vfl.errors import ShardError, VflError
from vfl.party.common import LocalAlignment
from vfl.party.export import Shard
from vfl.party.partners import UserScope, UserUniverse
from vfl.training.inputs import TableTensors
from vfl.training.recommenders import ActiveHead, ActiveInputs


class NotFound(VflError, LookupError):
    """A user or item id the service does not know (an HTTP 404)."""


class Path(Enum):
    """Which part of the model served an answer."""

    VFL = "vfl"  # some partner knows the user: its z_B from the cache
    E_ONLY = "e_only"  # no partner knows the user: every a_k in their place


Shards = Shard | Sequence[Shard]


def _listed(shards: Shards) -> list[Shard]:
    """E's shards as a list, one per partner in the model's order."""
    return [shards] if isinstance(shards, Shard) else list(shards)


def user_universe(shards: Shards, data: ActiveData) -> UserUniverse:
    """Every E user in id order, with its aligned position at each partner of ``shards``
    (-1: that partner does not know it)."""
    everyone = LocalAlignment(ids=data.users.ids, rows=np.arange(len(data.users), dtype=np.int64))
    return UserUniverse.of(everyone, [s.alignment() for s in _listed(shards)], UserScope.ALL)


def universe_head(shards: Shards, data: ActiveData, plan: JobPlan) -> ActiveHead:
    """E's trained head (the same in every shard) over the user universe, the order it was
    trained in.

    Raises:
        ShardError: E's user table no longer has the users the head was trained on, or the
            head was trained with another number of partners.
    """
    listed = _listed(shards)
    shard = listed[0]
    users = user_universe(listed, data)
    inputs = ActiveInputs(
        users=TableTensors.from_table(data.users, users.rows),
        items=TableTensors.from_table(data.items),
        kind=data.kind,
    )
    state = shard.state_dict("head.pt")
    starts = state.get("sequences.starts")
    if starts is not None and len(starts) > 1 and int(starts.shape[0]) != len(users) + 1:
        raise ShardError(
            f"{shard.path / 'head.pt'}: trained on {int(starts.shape[0]) - 1} E users, E's "
            f"user table has {len(users)}. Fix: serve with the user file the model was trained on"
        )
    absent = state.get("partners.absent")
    n_partners = 0 if absent is None else int(absent.shape[0])
    if absent is not None and n_partners != len(listed):
        raise ShardError(
            f"{shard.path / 'head.pt'}: trained with {n_partners} partners, served with "
            f"{len(listed)} shards. Fix: list every partner of the training job in [network]"
        )
    head = ActiveHead(inputs, plan.model, n_users=len(users), n_partners=n_partners)
    head.load_state_dict(state)
    head.eval()
    return head


@dataclass(frozen=True)
class Scored:
    """Scores of some items for one user, and which path served them."""

    items: np.ndarray  # item indices
    scores: np.ndarray  # probabilities
    path: Path


class Recommender:
    """Top-K and pair scores for any E user, from the head and each partner's ``z_B`` table."""

    def __init__(self, shards: Shards, cfg: PartyConfig, data: ActiveData, plan: JobPlan) -> None:
        self.cfg, self.data = cfg, data
        listed = _listed(shards)
        self.head = universe_head(listed, data, plan)
        with torch.no_grad():
            self.v_all = self.head.item_vectors()  # fixed at serving time: computed once
        users = user_universe(listed, data)
        self.names = [str(s.manifest["peer"]) for s in listed]
        self.partner_pos = users.positions  # per partner: universe position -> its position
        self.user_pos = {str(u): k for k, u in enumerate(users.ids.tolist())}
        self.item_ids = [str(i) for i in data.items.ids.tolist()]
        self.item_index = {i: k for k, i in enumerate(self.item_ids)}
        self.seen = _seen(data, self.user_pos, self.item_index)
        self.n_aligned = [len(s.alignment()) for s in listed]
        self.z_b: list[torch.Tensor] | None = None

    def use(self, z_b: np.ndarray | Sequence[np.ndarray]) -> None:
        """Serve from ``z_b`` from now on: one table per partner (row j = its aligned
        position j); with one partner its table alone.

        Raises:
            ValueError: not one table per partner.
        """
        tables = [z_b] if isinstance(z_b, np.ndarray) else list(z_b)
        if len(tables) != len(self.names):
            raise ValueError(f"{len(tables)} z_B tables for {len(self.names)} partners")
        self.z_b = [torch.as_tensor(np.asarray(t, np.float32)) for t in tables]

    def user(self, raw: str) -> int:
        """The universe position of user ``raw`` (normalised by E's id rule).

        Raises:
            NotFound: E has no such user.
        """
        pos = self.user_pos.get(self.cfg.ids.normalise(raw))
        if pos is None:
            raise NotFound(f"unknown user {raw!r}: not among E's customers")
        return pos

    def item(self, raw: str) -> int:
        """The catalogue index of item ``raw``.

        Raises:
            NotFound: no such item in E's catalogue.
        """
        for key in (raw, raw.strip(), self.cfg.ids.normalise(raw)):
            if key in self.item_index:
                return self.item_index[key]
        raise NotFound(f"unknown item {raw!r}: not in E's catalogue")

    def path(self, pos: int) -> Path:
        """VFL when some partner knows the user (and a refresh has run), else E-only."""
        return Path.VFL if self.partners_of(pos) else Path.E_ONLY

    def partners_of(self, pos: int) -> list[str]:
        """The partners whose ``z_B`` enters the score of the user at ``pos``."""
        if self.z_b is None:
            return []
        return [n for n, at in zip(self.names, self.partner_pos, strict=True) if at[pos] >= 0]

    @torch.no_grad()
    def score(self, pos: int, items: np.ndarray) -> Scored:
        """Probabilities of ``items`` for the user at universe position ``pos``."""
        path = self.path(pos)
        if len(items) == 0:
            return Scored(np.asarray(items, np.int64), np.empty(0), path)
        z = self._terms(np.array([pos], np.int64))[0]
        rows = torch.as_tensor(items, dtype=torch.int64)
        logits = self.head.user_logits(pos, rows, z, self.v_all)
        return Scored(items, torch.sigmoid(logits).numpy().astype(np.float64), path)

    @torch.no_grad()
    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, list[Path]]:
        """Probabilities of (universe position, item) rows in one pass, and each row's path."""
        paths = [self.path(int(u)) for u in users.tolist()]
        logits = self.head.logits(
            torch.as_tensor(users), torch.as_tensor(items), self._terms(users)
        )
        return torch.sigmoid(logits).numpy().astype(np.float64), paths

    def _terms(self, users: np.ndarray) -> torch.Tensor:
        """``Σ_k m_uk·z_Bk[u] + (1 - m_uk)·a_k`` of each of ``users`` (m x h), summed in the
        partners' order as in training."""
        total: torch.Tensor | None = None
        for k, positions in enumerate(self.partner_pos):
            at = positions[np.asarray(users, np.int64)]
            known = np.flatnonzero(at >= 0) if self.z_b is not None else at[:0]
            if len(known) == len(users) and self.z_b is not None:
                term = self.z_b[k][torch.as_tensor(at)]
            else:
                term = self._absent(k).expand(len(users), -1).clone()
                if len(known) and self.z_b is not None:
                    term[known] = self.z_b[k][torch.as_tensor(at[known])]
            total = term if total is None else total + term
        if total is None:
            raise NotFound("this model has no partner")
        return total

    def _absent(self, k: int) -> torch.Tensor:
        """``a_k`` of partner ``k`` (h,).

        Raises:
            NotFound: the head was trained without it (no E-only path).
        """
        if self.head.partners is None:
            raise NotFound("this model has no E-only path (trained without a_k)")
        return self.head.partners.absent[k]

    def recommend(self, pos: int, k: int, *, exclude_seen: bool = True) -> Scored:
        """The ``k`` best items (ties: lower index first), without those the user has."""
        every = np.arange(len(self.item_ids), dtype=np.int64)
        seen = self.seen.get(pos, np.empty(0, np.int64))
        candidates = np.delete(every, seen) if exclude_seen else every
        scored = self.score(pos, candidates)
        order = np.lexsort((scored.items, -scored.scores))[:k]
        return Scored(scored.items[order], scored.scores[order], scored.path)


def _seen(
    data: ActiveData, user_pos: dict[str, int], item_index: dict[str, int]
) -> dict[int, np.ndarray]:
    """Per universe position, the catalogue indices of the items the user has in E's log."""
    log = data.interactions
    by_user: dict[int, list[int]] = {}
    pairs = zip(log.user_ids.astype(str).tolist(), log.item_ids.astype(str).tolist(), strict=True)
    for u, i in pairs:
        if u in user_pos and i in item_index:
            by_user.setdefault(user_pos[u], []).append(item_index[i])
    return {u: np.unique(np.array(v, np.int64)) for u, v in by_user.items()}
