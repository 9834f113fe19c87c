"""In-memory tables a party works on after loading and validation.

Numeric features are standardised (z-score, computed on the party's own data only) and
categorical features are integer codes ``0 .. cardinality-1``; ids are normalised strings.
Nothing here ever leaves the party that loaded it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureTable:
    """Per-entity features (users or items): row ``i`` describes ``ids[i]``; ids are unique."""

    ids: np.ndarray  # (n,) str, normalised, unique
    numeric: np.ndarray  # (n, n_numeric) float32, standardised
    numeric_names: tuple[str, ...]
    categorical: np.ndarray  # (n, n_categorical) int64 codes
    categorical_names: tuple[str, ...]
    cardinalities: tuple[int, ...]  # one per categorical column

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self) -> dict[str, int]:
        """Map id -> row index."""
        return {str(i): n for n, i in enumerate(self.ids)}

    def take(self, rows: np.ndarray) -> FeatureTable:
        """Return the sub-table of the given row indices, in that order."""
        return FeatureTable(
            ids=self.ids[rows],
            numeric=self.numeric[rows],
            numeric_names=self.numeric_names,
            categorical=self.categorical[rows],
            categorical_names=self.categorical_names,
            cardinalities=self.cardinalities,
        )


@dataclass(frozen=True)
class InteractionLog:
    """E's interaction log: one row per (user, item, time) event; ``labels`` 1 = positive."""

    user_ids: np.ndarray  # (r,) str, normalised
    item_ids: np.ndarray  # (r,) str, normalised
    timestamps: np.ndarray  # (r,) float64
    labels: np.ndarray  # (r,) int8 in {0, 1}

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass(frozen=True)
class ActiveData:
    """What E (the active party) holds: user behaviour, item catalogue, labelled log."""

    users: FeatureTable
    items: FeatureTable
    interactions: InteractionLog
    kind: str = "ecommerce"  # the kind of organisation (vfl.kinds) whose models E builds


@dataclass(frozen=True)
class PassiveData:
    """What P (the passive party) holds: per-user payment features."""

    users: FeatureTable
    kind: str = "payments"  # the kind of organisation (vfl.kinds) whose bottom model P builds
