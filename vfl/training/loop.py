"""The training loop shared by every model: epochs of user-grouped steps, then evaluation.

Model selection is by validation NDCG@K: the reported test metrics are those of the epoch with
the best validation score, so the test split never influences any choice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vfl.data.splits import EvalLists, RecSplit
from vfl.evaluation.cold_start import ColdStartGroup, cold_start_group
from vfl.evaluation.metrics import RankingMetrics, evaluate_candidates
from vfl.training.inputs import UserBatcher
from vfl.training.recommenders import Recommender

EVAL_CHUNK_USERS = 256


@dataclass(frozen=True)
class EpochRecord:
    """Loss and metrics after one epoch."""

    epoch: int
    train_loss: float
    valid: RankingMetrics
    test: RankingMetrics
    seconds: float
    test_cold: RankingMetrics | None = None  # the cold-start users of the test list


@dataclass
class FitResult:
    """A finished training run."""

    name: str
    history: list[EpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0
    cold_max_train_positives: int = 0

    @property
    def best(self) -> EpochRecord:
        """The epoch with the highest validation NDCG (earliest on ties)."""
        return max(self.history, key=lambda r: (r.valid.ndcg, -r.epoch))


def score(model: Recommender, lists: EvalLists, *, step: int) -> np.ndarray:
    """Predicted probabilities of every candidate list, scored in chunks of users."""
    probs = [
        model.predict(
            step, lists.users[s : s + EVAL_CHUNK_USERS], lists.items[s : s + EVAL_CHUNK_USERS]
        )
        for s in range(0, len(lists.users), EVAL_CHUNK_USERS)
    ]
    return np.concatenate(probs)


def evaluate(model: Recommender, lists: EvalLists, *, step: int, k: int) -> RankingMetrics:
    """Score every candidate list, then compute the metrics."""
    return evaluate_candidates(score(model, lists, step=step), k)


def _test_metrics(
    probs: np.ndarray, cold: ColdStartGroup, k: int
) -> tuple[RankingMetrics, RankingMetrics | None]:
    """Metrics of all test users and of the cold-start group (None when it is empty)."""
    cold_metrics = evaluate_candidates(probs[cold.rows], k) if cold.size else None
    return evaluate_candidates(probs, k), cold_metrics


ProgressFn = Callable[[str, EpochRecord], None]


def fit(
    model: Recommender,
    split: RecSplit,
    batcher: UserBatcher,
    *,
    epochs: int,
    seed: int,
    k: int,
    cold_quantile: float = 0.2,
    progress: ProgressFn | None = None,
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs, evaluating validation and test after each."""
    rng = np.random.default_rng(seed)
    cold = cold_start_group(split.train_users, split.test.users, split.n_users, cold_quantile)
    result = FitResult(name=model.name, cold_max_train_positives=cold.max_train_positives)
    step = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        losses = []
        for batch in batcher.epoch(rng):
            losses.append(model.train_step(step, batch))
            step += 1
        valid = evaluate(model, split.valid, step=step, k=k)
        test, test_cold = _test_metrics(score(model, split.test, step=step), cold, k)
        record = EpochRecord(
            epoch, float(np.mean(losses)), valid, test, time.perf_counter() - t0, test_cold
        )
        result.history.append(record)
        if progress is not None:
            progress(model.name, record)
    result.train_seconds = time.perf_counter() - start
    return result
