"""What P can learn from batching and gradients (issue 14, items 1-3 and 8), on real runs.

Every test drives the secret-shared protocol (plaintext mode, the same messages) with a
recorder at P and checks what P actually received.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.helpers import tiny_parties, tiny_training_inputs
from tests.secure_helpers import build_pair, settings
from vfl.config.job import PrivacyConfig
from vfl.data.synthetic_writer import generate_synthetic
from vfl.data.tables import InteractionLog
from vfl.protocol.messages import SecureForwardIns
from vfl.protocol.options import Mode
from vfl.training.compare import prepare
from vfl.training.defences import GaussianLabelNoise
from vfl.training.inputs import UserBatcher
from vfl.training.loop import StopRule, fit
from vfl.training.privacy_audit import audit_split


def _fewer_purchases(active, rng):  # type: ignore[no-untyped-def]
    """The same users, items and features; each user keeps 0, 1, 2 or all its positives."""
    log = active.interactions
    keep = np.zeros(len(log.user_ids), dtype=bool)
    for u in np.unique(log.user_ids):
        rows = np.flatnonzero(log.user_ids == u)
        keep[rows[: int(rng.choice([0, 1, 2, len(rows)]))]] = True
    fewer = InteractionLog(
        user_ids=log.user_ids[keep],
        item_ids=log.item_ids[keep],
        timestamps=log.timestamps[keep],
        labels=log.labels[keep],
    )
    return dataclasses.replace(active, interactions=fewer)


def _what_p_sees(parties, sample_seed: int = 11):  # type: ignore[no-untyped-def]
    """Every SecureForwardIns P receives over 2 epochs and their evaluations."""
    pair = build_pair(
        tiny_training_inputs(parties), e_settings=settings(Mode.PLAINTEXT), allow=(True, True)
    )
    pair.start()
    try:
        batcher = UserBatcher(pair.split, users_per_step=4, negatives_per_positive=2, order_seed=5)
        fit(pair.model, pair.split, batcher, stop=StopRule(max_epochs=2), seed=sample_seed, k=5)
    finally:
        pair.stop()
    return pair, [(m.train, m.users.tolist()) for m in pair.p_rec.of_type(SecureForwardIns)]


def test_user_sets_p_receives_do_not_depend_on_purchases() -> None:
    # Prepare: two logs differing only in how many purchases each user has
    active, passive = tiny_parties()
    fewer = _fewer_purchases(active, np.random.default_rng(3))
    # Execute
    pair, many_seen = _what_p_sees((active, passive))
    _, few_seen = _what_p_sees((fewer, passive))
    # Assert: the same sequence of user sets, in training and in every evaluation
    assert many_seen == few_seen
    n = pair.split.n_users
    train_sets = [users for train, users in many_seen if train]
    for epoch in (train_sets[: len(train_sets) // 2], train_sets[len(train_sets) // 2 :]):
        assert sorted(u for users in epoch for u in users) == list(range(n))
    evals = [users for train, users in many_seen if not train]
    assert sorted(u for users in evals for u in users) == sorted(list(range(n)) * 2)


def test_rows_differ_with_e_secret_but_p_view_does_not() -> None:
    # The order comes from (job seed, epoch) only; E's negatives from its own secret seed.
    active, passive = tiny_parties()
    pair_a, seen_a = _what_p_sees((active, passive), sample_seed=11)
    split = pair_a.split
    b1 = list(
        UserBatcher(split, users_per_step=4, negatives_per_positive=2).epoch(
            np.random.default_rng(1), 1
        )
    )
    b2 = list(
        UserBatcher(split, users_per_step=4, negatives_per_positive=2).epoch(
            np.random.default_rng(2), 1
        )
    )
    assert [b.users.tolist() for b in b1] == [b.users.tolist() for b in b2]
    assert any(not np.array_equal(x.row_item, y.row_item) for x, y in zip(b1, b2, strict=True))
    _, seen_b = _what_p_sees((active, passive), sample_seed=12)
    assert seen_a == seen_b


def test_every_user_weighs_the_same_whatever_its_rows() -> None:
    active, passive = tiny_parties(positives=(1, 12))
    _, split, *_ = tiny_training_inputs((active, passive))
    batcher = UserBatcher(split, users_per_step=6, negatives_per_positive=3)
    rows = split.user_rows()
    for batch in batcher.epoch(np.random.default_rng(0), 1):
        per_user = np.bincount(batch.row_user, weights=batch.row_weight)
        np.testing.assert_allclose(per_user, 1.0 / len(batch.users), rtol=1e-6)
        counts = np.bincount(batch.row_user)
        n_pos = np.array([len(rows.get(int(u), [])) for u in batch.users])
        np.testing.assert_array_equal(counts, np.maximum(n_pos, 1) * 4 - (n_pos == 0))


def test_gaussian_noise_clips_and_is_fresh_per_step() -> None:
    defence = GaussianLabelNoise(multiplier=0.0, clip=0.1)
    delta = np.array([[3.0, 4.0], [0.01, 0.0]]) / 2  # m = 2: user mean gradients 5.0, 0.01
    out = defence(delta, secret=1) * 2
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [0.1, 0.01])
    noisy = GaussianLabelNoise(multiplier=1.0, clip=0.1)
    assert not np.allclose(noisy(delta, 1), noisy(delta, 2))
    np.testing.assert_array_equal(noisy(delta, 1), noisy(delta, 1))


@pytest.fixture(scope="module")
def synthetic_job(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(out, users=1200, items=300)
    return prepare(out / "job.toml")


def test_default_defence_defeats_the_attacks_the_undefended_run_falls_to(synthetic_job) -> None:  # type: ignore[no-untyped-def]
    # Execute: the same job without defence and with the default one, 3 epochs each
    bare = audit_split(synthetic_job, epochs=3, privacy=PrivacyConfig(label_noise=0.0))
    guarded = audit_split(synthetic_job, epochs=3, privacy=PrivacyConfig())
    # Assert: P's attacks work without the defence ...
    assert bare.attacks.worst()["direction_auc"] > 0.75
    assert bare.attacks.worst()["counterfactual_auc"] == 1.0
    # ... and are near chance with it, while the audit holds in both
    assert guarded.attacks.worst()["direction_auc"] <= 0.60
    assert guarded.attacks.worst()["activity_auc"] <= 0.60
    for run in (bare, guarded):
        assert run.attacks.audit.min_appearances == run.attacks.audit.max_appearances == 1
        assert run.attacks.audit.every_evaluation_all_users
    assert abs(guarded.fit.best.test.auc - bare.fit.best.test.auc) < 0.03
