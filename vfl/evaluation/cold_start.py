"""Cold-start users: the test users with the fewest training interactions.

P's features matter most where E knows little about a user, so the pilot reports the metrics
of this group separately. The group is defined by a quantile of the number of training
positives among test users (ties included), which works whatever the dataset's activity
distribution: MovieLens users all have at least 20 ratings, synthetic users as few as one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ColdStartGroup:
    """Which rows of a candidate list belong to cold-start users.

    Attributes:
        rows: boolean mask over the candidate list's rows.
        max_train_positives: the threshold: a user is cold if it has at most this many.
    """

    rows: np.ndarray
    max_train_positives: int

    @property
    def size(self) -> int:
        """Number of cold-start users in the list."""
        return int(self.rows.sum())


def cold_start_group(
    train_users: np.ndarray, list_users: np.ndarray, n_users: int, quantile: float
) -> ColdStartGroup:
    """Users of ``list_users`` whose training-positive count is at most its ``quantile``.

    Args:
        train_users: aligned user position of every training positive.
        list_users: aligned user position of each candidate-list row.
        n_users: number of aligned users.
        quantile: in ``(0, 1]``; 0.2 selects (at least) the least active fifth.

    Raises:
        ValueError: if ``quantile`` is outside ``(0, 1]``.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"cold-start quantile must be in (0, 1], got {quantile}")
    counts = np.bincount(np.asarray(train_users, dtype=np.int64), minlength=n_users)
    per_row = counts[np.asarray(list_users, dtype=np.int64)]
    if per_row.size == 0:
        return ColdStartGroup(rows=np.zeros(0, dtype=bool), max_train_positives=0)
    threshold = int(np.quantile(per_row, quantile, method="lower"))
    return ColdStartGroup(rows=per_row <= threshold, max_train_positives=threshold)
