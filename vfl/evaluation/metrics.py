"""Metrics for implicit-feedback recommendation, computed only by E (P never sees them).

Candidate lists are rows of a ``(n_users, n_candidates)`` score matrix whose column 0 is the
held-out positive and the other columns are sampled unseen items.

Ties are counted *against* the positive: its rank is the number of negatives scoring at least as
high. A constant scorer therefore gets HR@K = 0, never a lucky 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_EPS = 1e-7


def positive_rank(scores: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of column 0 in each row: ``#{j > 0 : s[j] >= s[0]}``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (n_users, n_candidates>=2), got {scores.shape}")
    return np.asarray((scores[:, 1:] >= scores[:, :1]).sum(axis=1), dtype=np.int64)


def hit_rate_at_k(scores: np.ndarray, k: int) -> float:
    """HR@K: fraction of users whose held-out item ranks in the top ``k`` of its candidates."""
    return float(np.mean(positive_rank(scores) < k))


def ndcg_at_k(scores: np.ndarray, k: int) -> float:
    """NDCG@K with one relevant item: mean of ``1 / log2(rank + 2)`` if ``rank < k`` else 0."""
    rank = positive_rank(scores)
    gains = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    return float(np.mean(gains))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U); tied scores share their average rank.

    Raises:
        ValueError: if ``labels`` hold only one class.
    """
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average 1-based ranks over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [scores.size]))
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to ``[1e-7, 1 - 1e-7]``."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probs, dtype=np.float64).ravel(), _EPS, 1.0 - _EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


@dataclass(frozen=True)
class RankingMetrics:
    """The metrics every model is reported with, on the same candidate lists."""

    hr: float
    ndcg: float
    auc: float
    logloss: float
    k: int

    def as_dict(self) -> dict[str, float]:
        """Flat dict with keys ``hr@K``, ``ndcg@K``, ``auc``, ``logloss``."""
        d = asdict(self)
        k = d.pop("k")
        return {
            f"hr@{k}": d["hr"],
            f"ndcg@{k}": d["ndcg"],
            "auc": d["auc"],
            "logloss": d["logloss"],
        }


def evaluate_candidates(probs: np.ndarray, k: int) -> RankingMetrics:
    """All metrics from a ``(n_users, n_candidates)`` matrix of predicted probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.zeros_like(probs)
    labels[:, 0] = 1.0
    return RankingMetrics(
        hr=hit_rate_at_k(probs, k),
        ndcg=ndcg_at_k(probs, k),
        auc=roc_auc(labels, probs),
        logloss=log_loss(labels, probs),
        k=k,
    )
