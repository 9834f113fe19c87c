"""The evaluation protocol: leave-last-out by time, unseen negatives, fixed seed."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import tiny_parties
from vfl.data.alignment import Alignment, align_locally
from vfl.data.splits import build_split, is_seen
from vfl.errors import DataError
from vfl.training.inputs import UserBatcher


def _split(seed: int = 0, n_negatives: int = 20):
    active, passive = tiny_parties()
    alignment = align_locally(active.users.ids, passive.users.ids)
    return (
        active,
        alignment,
        build_split(
            active.interactions, alignment, active.items, n_negatives=n_negatives, seed=seed
        ),
    )


def test_only_aligned_users_and_last_two_held_out() -> None:
    active, alignment, split = _split()
    assert len(alignment) == 30  # u010..u039
    log = active.interactions
    for pos, uid in enumerate(alignment.ids):
        mine = log.user_ids == uid
        order = np.argsort(log.timestamps[mine])
        items = log.item_ids[mine][order]
        item_idx = {str(i): n for n, i in enumerate(active.items.ids)}
        t = int(np.flatnonzero(split.test.users == pos)[0])
        v = int(np.flatnonzero(split.valid.users == pos)[0])
        assert split.test.items[t, 0] == item_idx[items[-1]]
        assert split.valid.items[v, 0] == item_idx[items[-2]]
        train = sorted(split.train_items[split.train_users == pos].tolist())
        assert train == sorted(item_idx[i] for i in items[:-2])


def test_candidates_are_unseen_distinct_and_reproducible() -> None:
    _, _, split = _split(seed=3)
    _, _, again = _split(seed=3)
    np.testing.assert_array_equal(split.test.items, again.test.items)
    seen = set(split.seen_codes.tolist())
    for u, row in zip(split.test.users, split.test.items, strict=True):
        negs = row[1:]
        assert len(set(negs.tolist())) == len(negs)
        assert not any(int(u) * split.n_items + int(i) in seen for i in negs)


def test_training_negatives_draw_held_out_items_at_the_uniform_rate() -> None:
    # Prepare: many training-negative draws for every user, through the batcher as training does
    _, _, split = _split()
    batcher = UserBatcher(split, users_per_step=7, negatives_per_positive=4)
    rng = np.random.default_rng(0)
    draws = {u: np.zeros(split.n_items, np.int64) for u in range(split.n_users)}

    # Execute
    for epoch in range(1, 61):
        for batch in batcher.epoch(rng, epoch):
            neg = batch.labels == 0
            users = batch.users[batch.row_user[neg]]
            for u, i in zip(users.tolist(), batch.row_item[neg].tolist(), strict=True):
                draws[u][i] += 1

    # Assert: never a training positive; the held-out items at the uniform rate
    held_hits, held_expected = 0, 0.0
    for lists in (split.valid, split.test):
        for u, item in zip(lists.users.tolist(), lists.items[:, 0].tolist(), strict=True):
            n_draws = int(draws[u].sum())
            n_allowed = split.n_items - int((split.train_users == u).sum())
            held_hits += int(draws[u][item])
            held_expected += n_draws / n_allowed
    for u in range(split.n_users):
        assert draws[u][split.train_items[split.train_users == u]].sum() == 0
    assert held_expected > 400  # enough draws for a 5-sigma band of about +-25%
    assert abs(held_hits - held_expected) < 5 * np.sqrt(held_expected)


def test_history_is_the_last_training_positives_by_time() -> None:
    # Prepare
    active, alignment, split = _split()
    item_idx = {str(i): n for n, i in enumerate(active.items.ids)}
    log = active.interactions

    # Execute
    hist = split.history(4)

    # Assert: right-aligned, latest last, never a validation or test item
    for pos, uid in enumerate(alignment.ids):
        mine = log.user_ids == uid
        items = log.item_ids[mine][np.argsort(log.timestamps[mine], kind="stable")]
        expected = [item_idx[i] for i in items[:-2]][-4:]
        row = hist[pos]
        assert row[4 - len(expected) :].tolist() == expected
        assert (row[: 4 - len(expected)] == split.n_items).all()


def test_too_small_catalogue_names_the_user_and_the_key() -> None:
    active, passive = tiny_parties(n_items=100)
    alignment = align_locally(active.users.ids, passive.users.ids)
    with pytest.raises(DataError, match=r"user 'u\d+'.*test_negatives"):
        build_split(active.interactions, alignment, active.items, n_negatives=95, seed=0)


def test_is_seen_matches_set_membership() -> None:
    rng = np.random.default_rng(5)
    seen = np.unique(rng.integers(0, 1000, 300))
    codes = rng.integers(-5, 1010, (40, 7))
    expected = np.vectorize(lambda c: c in set(seen.tolist()))(codes)
    np.testing.assert_array_equal(is_seen(codes, seen), expected)
    assert not is_seen(codes, np.array([], dtype=np.int64)).any()


def test_candidates_do_not_depend_on_alignment_order() -> None:
    active, passive = tiny_parties()
    al = align_locally(active.users.ids, passive.users.ids)
    perm = np.random.default_rng(0).permutation(len(al))
    shuffled = Alignment(
        ids=al.ids[perm], active_rows=al.active_rows[perm], passive_rows=al.passive_rows[perm]
    )
    a = build_split(active.interactions, al, active.items, n_negatives=20, seed=3)
    b = build_split(active.interactions, shuffled, active.items, n_negatives=20, seed=3)
    by_id_a = {al.ids[u]: row.tolist() for u, row in zip(a.test.users, a.test.items, strict=True)}
    by_id_b = {
        shuffled.ids[u]: row.tolist() for u, row in zip(b.test.users, b.test.items, strict=True)
    }
    assert by_id_a == by_id_b
