"""Party tables turned into tensors, and training batches drawn by user (SPEC §4).

What P learns from batching is bounded by three rules (issue 14, "what P may not infer"):

1. **Every aligned user, once per epoch.** An epoch visits all ``n_users`` aligned users --
   those with no training positive too -- in groups of ``users_per_step``. Which users a
   step covers therefore depends on nothing E knows about them.
2. **The order is public, the rows are secret.** The epoch's user order is a permutation
   drawn from ``(job seed, epoch)`` alone, which P could compute itself and so learns
   nothing from; the negatives, and the per-step secret handed to E's defences, come from
   E's own generator ``rng`` (seeded from E's local secret, never the job seed).
3. **Each user weighs the same.** A user's rows are its training positives plus
   ``negatives_per_positive`` negatives per positive (items outside the user's training
   positives; a user with no positive gets ``negatives_per_positive`` negatives alone).
   Row ``r`` of user ``u`` carries the weight
   ``w_r = 1 / (m · n_u)`` for ``m`` users in the step and ``n_u`` rows of ``u``, so the loss
   is ``L = Σ_r w_r · l_r = (1/m) Σ_u mean_{r∈u} l_r``: the per-user mean, averaged over
   users. ``δ_u = ∂L/∂z_B[u]`` is then ``1/m`` times the mean of ``u``'s row gradients, whose
   size does not grow with ``n_u`` (a row-sum would grow linearly with it, and P could rank
   E's users by activity from ``‖∂L/∂b_u‖``).
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
    row_weight: np.ndarray  # (r,) float32, 1 / (m · rows of the row's user); sums to 1
    secret: int = 0  # a fresh 63-bit value from E's own stream, for E's defences


class UserBatcher:
    """Yields an epoch of :class:`Batch` es: every aligned user once (rules in the module doc)."""

    def __init__(
        self,
        split: RecSplit,
        *,
        users_per_step: int,
        negatives_per_positive: int,
        order_seed: int = 0,
    ) -> None:
        self.split = split
        self.users_per_step = users_per_step
        self.negatives = negatives_per_positive
        self.order_seed = order_seed
        empty = np.empty(0, dtype=np.int64)
        rows = split.user_rows()
        self._rows = [rows.get(u, empty) for u in range(split.n_users)]

    def steps_per_epoch(self) -> int:
        """Number of steps in one epoch."""
        return -(-self.split.n_users // self.users_per_step)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's user order: a permutation of every aligned user from the job seed."""
        return np.random.default_rng([self.order_seed, epoch]).permutation(self.split.n_users)

    def epoch(self, rng: np.random.Generator, epoch: int = 1) -> Iterator[Batch]:
        """One batch per group of ``users_per_step`` users of :meth:`order`; rows from ``rng``."""
        order = self.order(epoch)
        for start in range(0, len(order), self.users_per_step):
            yield self._batch(order[start : start + self.users_per_step], rng)

    def _batch(self, users: np.ndarray, rng: np.random.Generator) -> Batch:
        per_user = [self._rows[int(u)] for u in users]
        n_pos = np.array([len(r) for r in per_user], dtype=np.int64)
        rows = np.concatenate(per_user)
        local = np.repeat(np.arange(len(users)), n_pos)
        # A user with no training positive still gets one slot's worth of negatives.
        neg_slots = np.repeat(np.arange(len(users)), np.maximum(n_pos, 1))
        neg_items = sample_negatives(
            users[neg_slots], self.negatives, self.split.train_codes, self.split.n_items, rng
        )
        row_user = np.concatenate([local, np.repeat(neg_slots, self.negatives)])
        row_item = np.concatenate([self.split.train_items[rows], neg_items.ravel()])
        labels = np.concatenate([np.ones(len(rows)), np.zeros(neg_items.size)])
        n_rows = np.bincount(row_user, minlength=len(users))
        weight = 1.0 / (len(users) * n_rows[row_user])
        return Batch(
            users=users,
            row_user=row_user,
            row_item=row_item,
            labels=labels.astype(np.float32),
            row_weight=weight.astype(np.float32),
            secret=int(rng.integers(0, 2**63 - 1)),
        )
