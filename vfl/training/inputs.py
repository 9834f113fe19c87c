"""Party tables turned into tensors, and training batches drawn by user (SPEC §4).

A step takes a group of aligned users with all their training rows (positives plus freshly
sampled negatives). The passive party only ever learns which users a step covers -- never how
many rows each user has -- so row-level shuffling, which would leak E's activity counts to P,
is deliberately avoided.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vfl.data.splits import RecSplit, sample_negatives
from vfl.data.tables import FeatureTable


@dataclass(frozen=True)
class TableTensors:
    """Numeric and categorical features of a table as tensors, rows in a chosen order."""

    numeric: torch.Tensor  # (n, n_numeric) float32
    categorical: torch.Tensor  # (n, n_categorical) int64
    n_numeric: int
    cardinalities: tuple[int, ...]

    @classmethod
    def from_table(cls, table: FeatureTable, rows: np.ndarray | None = None) -> TableTensors:
        """Tensors of ``table`` (optionally re-ordered / restricted to ``rows``)."""
        t = table if rows is None else table.take(rows)
        return cls(
            numeric=torch.as_tensor(np.asarray(t.numeric, dtype=np.float32)),
            categorical=torch.as_tensor(np.asarray(t.categorical, dtype=np.int64)),
            n_numeric=len(t.numeric_names),
            cardinalities=tuple(t.cardinalities),
        )

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids, numeric, categorical)`` for the given row indices."""
        return idx, self.numeric[idx], self.categorical[idx]


@dataclass(frozen=True)
class Batch:
    """One training step: the distinct users it covers and its (user, item, label) rows."""

    users: np.ndarray  # (m,) aligned user positions -- the only thing P sees
    row_user: np.ndarray  # (r,) index into ``users``
    row_item: np.ndarray  # (r,) item indices
    labels: np.ndarray  # (r,) float32 in {0, 1}


class UserBatcher:
    """Yields an epoch of :class:`Batch` es: every training user once, in a fresh random order."""

    def __init__(
        self, split: RecSplit, *, users_per_step: int, negatives_per_positive: int
    ) -> None:
        self.split = split
        self.users_per_step = users_per_step
        self.negatives = negatives_per_positive
        self._rows = split.user_rows()
        self._users = np.array(sorted(self._rows), dtype=np.int64)

    def steps_per_epoch(self) -> int:
        """Number of steps in one epoch."""
        return -(-len(self._users) // self.users_per_step)

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        """Shuffle users, then yield one batch per group of ``users_per_step`` users."""
        order = rng.permutation(self._users)
        for start in range(0, len(order), self.users_per_step):
            yield self._batch(order[start : start + self.users_per_step], rng)

    def _batch(self, users: np.ndarray, rng: np.random.Generator) -> Batch:
        rows = np.concatenate([self._rows[int(u)] for u in users])
        local = np.repeat(np.arange(len(users)), [len(self._rows[int(u)]) for u in users])
        pos_items = self.split.train_items[rows]
        neg_items = sample_negatives(
            users[local], self.negatives, self.split.seen_codes, self.split.n_items, rng
        )
        row_user = np.concatenate([local, np.repeat(local, self.negatives)])
        row_item = np.concatenate([pos_items, neg_items.ravel()])
        labels = np.concatenate([np.ones(len(rows)), np.zeros(neg_items.size)])
        return Batch(
            users=users, row_user=row_user, row_item=row_item, labels=labels.astype(np.float32)
        )
