"""E's sequence-aware user representation and early stopping (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import tiny_training_inputs
from vfl.config.job import ModelConfig, TrainConfig
from vfl.data.splits import RecSplit
from vfl.evaluation.metrics import RankingMetrics
from vfl.models.sequence import UserSequences
from vfl.training.inputs import UserBatcher
from vfl.training.loop import EpochRecord, StopReason, StopRule, fit, progress_line
from vfl.training.recommenders import ActiveHead, HeadRecommender


def _sequences(split: RecSplit, length: int) -> UserSequences:
    return UserSequences(
        split.train_users,
        split.train_items,
        n_users=split.n_users,
        n_items=split.n_items,
        length=length,
    )


def test_a_training_positive_sees_only_the_items_before_it() -> None:
    # Prepare
    _, split, *_ = tiny_training_inputs()
    seq = _sequences(split, 3)
    users, items = torch.tensor(split.train_users), torch.tensor(split.train_items)

    # Execute
    hist = seq.history(users, seq.positions(users, items, train=True)).numpy()

    # Assert: row r's history is the (up to) 3 training items of its user just before it
    for r, (u, i) in enumerate(zip(split.train_users, split.train_items, strict=True)):
        mine = split.train_items[split.train_users == u].tolist()
        before = mine[: mine.index(int(i))][-3:]
        assert hist[r, 3 - len(before) :].tolist() == before
        assert (hist[r, : 3 - len(before)] == split.n_items).all()
        assert int(i) not in hist[r].tolist()


def test_scoring_sees_the_last_training_items_and_never_a_held_out_one() -> None:
    # Prepare
    _, split, *_ = tiny_training_inputs()
    seq = _sequences(split, 4)
    lists = split.test
    users = torch.as_tensor(np.repeat(lists.users, lists.items.shape[1]))
    items = torch.as_tensor(lists.items.ravel())

    # Execute
    hist = seq.history(users, seq.positions(users, items, train=False)).numpy()

    # Assert
    np.testing.assert_array_equal(hist, split.history(4)[users.numpy()])
    held = {
        (int(u), int(x))
        for li in (split.valid, split.test)
        for u, x in zip(li.users, li.items[:, 0], strict=True)
    }
    assert not any(
        (int(u), int(x)) in held for u, row in zip(users, hist, strict=True) for x in row
    )


def test_negatives_of_a_user_spread_over_its_positions() -> None:
    # Prepare: 2 users with 3 and 1 training items, 6 negatives of user 0 and 2 of user 1
    seq = UserSequences(
        np.array([0, 0, 0, 1]), np.array([5, 6, 7, 8]), n_users=2, n_items=10, length=2
    )
    users = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0])
    items = torch.tensor([1, 1, 2, 3, 2, 4, 5, 9])  # item 5 of user 0 is its first positive

    # Execute
    at = seq.positions(users, items, train=True)

    # Assert: negatives cycle through positions 0..n_u-1; the positive gets its own
    assert at.tolist() == [0, 0, 1, 2, 0, 0, 0, 1]


def test_a_head_built_without_sequences_loads_them_from_a_trained_state() -> None:
    # Prepare
    al, split, inputs, *_ = tiny_training_inputs()
    trained = ActiveHead(inputs, ModelConfig(), n_users=len(al))
    bare = ActiveHead(
        type(inputs)(users=inputs.users, items=inputs.items), ModelConfig(), n_users=len(al)
    )

    # Execute
    bare.load_state_dict(trained.state_dict())

    # Assert: the same scores as the trained head's
    users, items = torch.as_tensor(split.test.users), torch.as_tensor(split.test.items[:, 0])
    with torch.no_grad():
        assert torch.equal(bare.logits(users, items, None), trained.logits(users, items, None))


def _record(epoch: int, ndcg: float) -> EpochRecord:
    m = RankingMetrics(k=10, hr=ndcg, ndcg=ndcg, auc=0.5, logloss=1.0)
    return EpochRecord(epoch=epoch, train_loss=1.0, valid=m, test=m, seconds=10.0)


@pytest.mark.parametrize(
    ("curve", "rule", "reason"),
    [
        ([0.1, 0.2, 0.2, 0.19], StopRule(max_epochs=9, patience=2), StopReason.PATIENCE),
        ([0.1, 0.2, 0.2], StopRule(max_epochs=9, patience=2), None),
        ([0.1, 0.2, 0.3], StopRule(max_epochs=3, patience=2), StopReason.MAX_EPOCHS),
        ([0.1, 0.2, 0.3], StopRule(max_epochs=9, time_budget_s=30.0), StopReason.TIME_BUDGET),
        ([0.1, 0.2], StopRule(max_epochs=9, time_budget_s=30.0), None),
    ],
)
def test_stop_rule(curve: list[float], rule: StopRule, reason: StopReason | None) -> None:
    history = [_record(e + 1, v) for e, v in enumerate(curve)]
    assert rule.reason(history) is reason


def test_fit_stops_early_and_progress_lines_show_no_test_metric() -> None:
    # Prepare: a learning rate too high to improve for long
    al, split, inputs, *_ = tiny_training_inputs()
    torch.manual_seed(0)
    model = HeadRecommender(
        "e_alone", inputs, ModelConfig(), TrainConfig(learning_rate=0.3), n_users=len(al)
    )
    batcher = UserBatcher(split, users_per_step=8, negatives_per_positive=2)
    lines: list[str] = []

    # Execute
    result = fit(
        model,
        split,
        batcher,
        stop=StopRule(max_epochs=40, patience=2),
        seed=1,
        k=10,
        progress=lambda name, r: lines.append(progress_line(name, r)),
    )

    # Assert
    assert result.stopped is StopReason.PATIENCE
    assert len(result.history) == result.best.epoch + 2 < 40
    assert len(lines) == len(result.history)
    assert all("valid" in line and "test" not in line for line in lines)
