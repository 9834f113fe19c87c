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


@dataclass
class FitResult:
    """A finished training run."""

    name: str
    history: list[EpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def best(self) -> EpochRecord:
        """The epoch with the highest validation NDCG (earliest on ties)."""
        return max(self.history, key=lambda r: (r.valid.ndcg, -r.epoch))


def evaluate(model: Recommender, lists: EvalLists, *, step: int, k: int) -> RankingMetrics:
    """Score every candidate list in chunks of users, then compute the metrics."""
    probs = [
        model.predict(
            step, lists.users[s : s + EVAL_CHUNK_USERS], lists.items[s : s + EVAL_CHUNK_USERS]
        )
        for s in range(0, len(lists.users), EVAL_CHUNK_USERS)
    ]
    return evaluate_candidates(np.concatenate(probs), k)


ProgressFn = Callable[[str, EpochRecord], None]


def fit(
    model: Recommender,
    split: RecSplit,
    batcher: UserBatcher,
    *,
    epochs: int,
    seed: int,
    k: int,
    progress: ProgressFn | None = None,
) -> FitResult:
    """Train ``model`` for ``epochs`` epochs, evaluating validation and test after each."""
    rng = np.random.default_rng(seed)
    result = FitResult(name=model.name)
    step = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        losses = []
        for batch in batcher.epoch(rng):
            losses.append(model.train_step(step, batch))
            step += 1
        valid = evaluate(model, split.valid, step=step, k=k)
        test = evaluate(model, split.test, step=step, k=k)
        record = EpochRecord(epoch, float(np.mean(losses)), valid, test, time.perf_counter() - t0)
        result.history.append(record)
        if progress is not None:
            progress(model.name, record)
    result.train_seconds = time.perf_counter() - start
    return result
