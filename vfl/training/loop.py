"""The training loop shared by every model: epochs of user-grouped steps, then evaluation.

Model selection is by validation NDCG@K: the reported test metrics are those of the epoch with
the best validation score, so the test split never influences any choice. Training stops
(:class:`StopRule`) after ``max_epochs``, once ``patience`` epochs have passed without a new
best validation NDCG@K, or once the epochs so far took ``time_budget_s`` seconds, whichever
comes first. Progress callbacks get validation metrics only; test metrics are computed at
every epoch (a federated evaluation asks P once per epoch for both lists) but read only at
the selected epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from vfl.config.job import TrainConfig
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
    # per user group of the test list (E's users by which partners know them), non-empty ones
    test_groups: dict[str, RankingMetrics] = field(default_factory=dict)


class StopReason(Enum):
    """Why a run of :func:`fit` ended."""

    MAX_EPOCHS = "max_epochs"
    PATIENCE = "patience"  # early stopping on validation NDCG@K
    TIME_BUDGET = "time_budget"


@dataclass(frozen=True)
class StopRule:
    """When to stop: at most ``max_epochs``; ``patience`` epochs after the best validation
    NDCG@K without a better one; or once the trained epochs took ``time_budget_s`` seconds.

    The rule reads only the epoch history (which a checkpoint holds), so a resumed run stops
    where the uninterrupted one does.
    """

    max_epochs: int
    patience: int | None = None
    time_budget_s: float | None = None

    @classmethod
    def of(cls, train: TrainConfig, *, epochs: int | None = None) -> StopRule:
        """The rule of a job's ``[train]`` section (``epochs`` overrides ``train.epochs``)."""
        return cls(
            max_epochs=epochs or train.epochs,
            patience=train.patience,
            time_budget_s=train.time_budget_s,
        )

    def reason(self, history: Sequence[EpochRecord]) -> StopReason | None:
        """The reason to stop after ``history``, or None to train another epoch."""
        if len(history) >= self.max_epochs:
            return StopReason.MAX_EPOCHS
        if not history:
            return None
        if self.patience is not None and self.patience <= epochs_since_best(history):
            return StopReason.PATIENCE
        if self.time_budget_s is not None and sum(r.seconds for r in history) >= self.time_budget_s:
            return StopReason.TIME_BUDGET
        return None


def epochs_since_best(history: Sequence[EpochRecord]) -> int:
    """Epochs trained after the best validation epoch of ``history``."""
    return history[-1].epoch - best_record(history).epoch


def best_record(history: Sequence[EpochRecord]) -> EpochRecord:
    """The epoch with the highest validation NDCG (earliest on ties)."""
    return max(history, key=lambda r: (r.valid.ndcg, -r.epoch))


@dataclass
class FitResult:
    """A finished training run."""

    name: str
    history: list[EpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0
    cold_max_train_positives: int = 0
    group_test_users: dict[str, int] = field(default_factory=dict)  # test users per group
    stopped: StopReason = StopReason.MAX_EPOCHS

    @property
    def best(self) -> EpochRecord:
        """The epoch with the highest validation NDCG (earliest on ties)."""
        return best_record(self.history)


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


# E's users by how many partners know them (vfl.party.partners.partner_groups)
KNOWN_TO_ALL, KNOWN_TO_SOME, E_ONLY = "known_to_all", "known_to_some", "e_only"


def group_rows(groups: Mapping[str, np.ndarray], test_users: np.ndarray) -> dict[str, np.ndarray]:
    """Rows of the test list per user group (``groups[g]``: a bool per user), non-empty only.

    Raises:
        ValueError: a group's mask does not cover every user of the test list.
    """
    rows: dict[str, np.ndarray] = {}
    for name, mask in groups.items():
        if len(test_users) and int(test_users.max()) >= len(mask):
            raise ValueError(f"group '{name}' has {len(mask)} users, the test list more")
        at = np.flatnonzero(np.asarray(mask, bool)[test_users])
        if at.size:
            rows[name] = at
    return rows


ProgressFn = Callable[[str, EpochRecord], None]
"""``progress(model_name, record)`` after each epoch: show only ``record.valid`` (and the loss)."""


def progress_line(name: str, r: EpochRecord) -> str:
    """One epoch's progress line: loss and validation metrics, never the test metrics."""
    return (
        f"{name:<15} epoch {r.epoch:>3}  loss {r.train_loss:.4f}  "
        f"valid NDCG@{r.valid.k} {r.valid.ndcg:.4f} HR@{r.valid.k} {r.valid.hr:.4f} "
        f"AUC {r.valid.auc:.4f}  {r.seconds:.1f}s"
    )


@dataclass
class LoopState:
    """Where a run of :func:`fit` stands, to checkpoint and to resume from.

    ``epoch_rng`` is the batch generator's state at the start of ``epoch``: replaying that
    epoch's draws up to ``position`` restores both the user order and every negative sampled.
    ``position == len(epoch)`` means the epoch is trained but not yet evaluated.
    """

    step: int = 0  # training steps done in all
    epoch: int = 1  # the current epoch, from 1
    position: int = 0  # steps done in the current epoch
    epoch_rng: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # every step's loss so far
    history: list[EpochRecord] = field(default_factory=list)

    def to_meta(self) -> dict[str, Any]:
        """JSON-ready form (for a checkpoint's ``meta``)."""
        meta = asdict(self)
        meta["history"] = [asdict(r) for r in self.history]
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> LoopState:
        """Inverse of :meth:`to_meta`."""
        history = [_record(r) for r in meta["history"]]
        fields = {k: meta[k] for k in ("step", "epoch", "position", "epoch_rng", "losses")}
        return cls(**fields, history=history)


def _record(d: dict[str, Any]) -> EpochRecord:
    cold = d.get("test_cold")
    return EpochRecord(
        epoch=d["epoch"],
        train_loss=d["train_loss"],
        valid=RankingMetrics(**d["valid"]),
        test=RankingMetrics(**d["test"]),
        seconds=d["seconds"],
        test_cold=None if cold is None else RankingMetrics(**cold),
        test_groups={g: RankingMetrics(**m) for g, m in d.get("test_groups", {}).items()},
    )


StepFn = Callable[[LoopState], None]
"""``on_step(state)``: called after every training step and after every epoch's evaluation."""


def fit(
    model: Recommender,
    split: RecSplit,
    batcher: UserBatcher,
    *,
    stop: StopRule,
    seed: int,
    k: int,
    cold_quantile: float = 0.2,
    progress: ProgressFn | None = None,
    start: LoopState | None = None,
    on_step: StepFn | None = None,
    groups: Mapping[str, np.ndarray] | None = None,
) -> FitResult:
    """Train ``model`` until ``stop`` says so, evaluating validation and test after each epoch.

    ``seed`` seeds the generator of the rows (negatives) and of the per-step secrets: a
    federated E passes its own local secret, never the job seed P knows (the user order
    comes from the batcher's public ``order_seed``, the job seed).
    With ``start`` (from a checkpoint) training continues exactly where that state stood,
    drawing the same user order and negatives as an uninterrupted run of the same ``seed``.
    ``groups`` (a bool per user for each named group) adds each group's test metrics.
    """
    rng = np.random.default_rng(seed)
    cold = cold_start_group(split.train_users, split.test.users, split.n_users, cold_quantile)
    result = FitResult(name=model.name, cold_max_train_positives=cold.max_train_positives)
    at_group = group_rows(groups or {}, split.test.users)
    result.group_test_users = {g: len(r) for g, r in at_group.items()}
    state = start or LoopState(epoch_rng=dict(rng.bit_generator.state))
    result.history = list(state.history)
    began = time.perf_counter()
    while (reason := stop.reason(state.history)) is None:
        t0 = time.perf_counter()
        loss = _train_epoch(model, batcher, rng, state, on_step)
        valid = evaluate(model, split.valid, step=state.step, k=k)
        probs = score(model, split.test, step=state.step)
        test, test_cold = _test_metrics(probs, cold, k)
        per_group = {g: evaluate_candidates(probs[r], k) for g, r in at_group.items()}
        seconds = time.perf_counter() - t0
        record = EpochRecord(state.epoch, loss, valid, test, seconds, test_cold, per_group)
        result.history.append(record)
        state.history.append(record)
        state.epoch, state.position = state.epoch + 1, 0
        state.epoch_rng = dict(rng.bit_generator.state)
        _notify(on_step, state)
        if progress is not None:
            progress(model.name, record)
    result.train_seconds = time.perf_counter() - began
    result.stopped = reason
    return result


def _train_epoch(
    model: Recommender,
    batcher: UserBatcher,
    rng: np.random.Generator,
    state: LoopState,
    on_step: StepFn | None,
) -> float:
    """The rest of ``state.epoch``'s steps; returns the epoch's mean loss.

    The epoch's batches are drawn from the generator state saved at its start, and those
    before ``state.position`` are drawn but not trained on, so the generator ends where an
    uninterrupted epoch leaves it.
    """
    rng.bit_generator.state = state.epoch_rng
    n_before = state.step - state.position
    for index, batch in enumerate(batcher.epoch(rng, state.epoch)):
        if index < state.position:
            continue  # trained before the resume: replay its draws only
        state.losses.append(model.train_step(state.step, batch))
        state.step, state.position = state.step + 1, index + 1
        _notify(on_step, state)
    return float(np.mean(state.losses[n_before:]))


def _notify(on_step: StepFn | None, state: LoopState) -> None:
    if on_step is not None:
        on_step(state)
