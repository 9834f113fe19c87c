"""E's passive parties: who they are, and which of E's users each knows (E's knowledge).

E runs one PSI with each partner; its alignment with partner k is the ids they share, in id
order (both sides train in that order). E's *universe* is the users it trains and scores:
all of its users (:attr:`UserScope.ALL`; a user no partner knows is scored through the
E-only path, ``a_k`` for every k) or only those some partner knows (:attr:`UserScope.SHARED`,
which with one partner is the two-party job of before). Position u of the universe is E's
u-th user by id; ``positions[k][u]`` is that user's aligned position at partner k, or -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from vfl.checkpoint import CheckpointStore
from vfl.data.alignment import Alignment
from vfl.party.common import LocalAlignment, in_id_order
from vfl.party.exporting import ShardExporter
from vfl.party.resume import Position
from vfl.protocol.endpoint import ByteChannel
from vfl.training.loop import E_ONLY, KNOWN_TO_ALL, KNOWN_TO_SOME


@dataclass(frozen=True)
class Partner:
    """One passive party of E's job: its name, the channel to it, and E's side of their PSI
    (``alignment``: the ids this partner shares with E and E's rows of them). Which of E's
    users a partner knows is E's knowledge: it is never sent to another party."""

    name: str
    channel: ByteChannel
    alignment: LocalAlignment


@dataclass(frozen=True)
class PartnerLink:
    """E's link to one partner before PSI: the channel, the directory of their PSI store,
    ``alignment.json`` and shard (``model/``), and, in a party process, the store of their
    alignment checkpoint and export marks, the position both agreed to resume from and the
    exporter of E's shard for this partner."""

    channel: ByteChannel
    work_dir: Path
    store: CheckpointStore | None = None
    resume_at: Position | None = None
    export: ShardExporter | None = None

    @property
    def name(self) -> str:
        """The partner's name (the channel's peer)."""
        return self.channel.peer


class UserScope(Enum):
    """Which of E's users train and are scored."""

    ALL = "all"  # every user of E; those no partner knows go through the E-only path (a_k)
    SHARED = "shared"  # only users some partner knows (with one partner: the intersection)


@dataclass(frozen=True)
class UserUniverse:
    """E's users of a job in id order (position u = user u), and per partner the partner's
    aligned position of each (-1: the partner does not know u)."""

    ids: np.ndarray  # (n,) normalised ids, sorted
    rows: np.ndarray  # (n,) int64 rows of E's user table
    positions: tuple[np.ndarray, ...]  # per partner, (n,) int64

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(
        cls, users: LocalAlignment, partners: Sequence[LocalAlignment], scope: UserScope
    ) -> UserUniverse:
        """The universe of E's ``users`` (every id and row of E's table) and its PSI with
        each partner; a partner's positions are those of its alignment in id order, the
        order both sides train in (:func:`~vfl.party.common.in_id_order`)."""
        aligned = [in_id_order(a) for a in partners]
        if scope is UserScope.SHARED:
            ids = np.unique(np.concatenate([a.ids.astype(str) for a in aligned]))
        else:
            ids = np.sort(users.ids.astype(str), kind="stable")
        where = dict(zip(users.ids.astype(str).tolist(), users.rows.tolist(), strict=True))
        rows = np.array([where[u] for u in ids.tolist()], dtype=np.int64)
        positions = []
        for a in aligned:
            at = {u: k for k, u in enumerate(a.ids.astype(str).tolist())}
            positions.append(np.array([at.get(u, -1) for u in ids.tolist()], dtype=np.int64))
        return cls(ids=ids, rows=rows, positions=tuple(positions))

    def alignment(self) -> Alignment:
        """E's side as an :class:`~vfl.data.alignment.Alignment` (for the split)."""
        return Alignment(
            ids=self.ids, active_rows=self.rows, passive_rows=np.full(len(self), -1, np.int64)
        )


def partner_groups(users: UserUniverse) -> dict[str, np.ndarray]:
    """E's users by how many partners know them (a bool per user of ``users`` each):
    ``known_to_all``, ``known_to_some`` (only with two or more partners) and ``e_only`` (no
    partner: scored through the ``a_k`` path). Groups that hold no user are left out."""
    known = np.stack(users.positions) >= 0 if users.positions else np.zeros((0, len(users)), bool)
    count = known.sum(axis=0)
    n = len(users.positions)
    groups = {
        KNOWN_TO_ALL: count == n,
        KNOWN_TO_SOME: (count > 0) & (count < n),
        E_ONLY: count == 0,
    }
    return {g: mask for g, mask in groups.items() if mask.any()}
