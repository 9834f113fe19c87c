"""Encrypted work scales with users, not interactions (SPEC §4: batches drawn by user).

* Ten times more items per user, same users: the same Paillier operation counts per epoch.
* Each epoch visits every training user in exactly one step, whatever its activity, in a
  fresh order; P sees nothing else per step.
"""

from __future__ import annotations

import numpy as np

from tests.helpers import tiny_parties, tiny_training_inputs
from tests.secure_helpers import Pair, build_pair, settings
from vfl.protocol.ciphers import OpCounts
from vfl.protocol.messages import SecureForwardIns

USERS_PER_STEP = 4


def _epochs(pair: Pair, n: int) -> list[int]:
    """Train ``n`` whole epochs; returns the number of rows of each epoch."""
    batches = pair.batches(n * pair_steps(pair), users_per_step=USERS_PER_STEP)
    pair.start()
    for step, batch in enumerate(batches):
        pair.model.train_step(step, batch)
    pair.stop()
    per = pair_steps(pair)
    return [sum(len(b.labels) for b in batches[i * per : (i + 1) * per]) for i in range(n)]


def pair_steps(pair: Pair) -> int:
    """Steps in one epoch of the user batcher."""
    n_users = len(pair.split.user_rows())
    return -(-n_users // USERS_PER_STEP)


def _total(pair: Pair) -> OpCounts:
    parts = [*pair.model.peer.share.counts().values(), *pair.server.share.counts().values()]
    out = OpCounts()
    for c in parts:
        out.encryptions += c.encryptions
        out.decryptions += c.decryptions
        out.rerandomisations += c.rerandomisations
        out.products += c.products
    return out


def test_paillier_work_per_epoch_does_not_grow_with_items_per_user() -> None:
    # Prepare: the same 30 aligned users with 4-8 positives each, then with 40-80 each
    runs = {}
    for label, positives in (("few", (4, 9)), ("10x", (40, 81))):
        parties = tiny_parties(n_items=400, positives=positives)
        pair = build_pair(tiny_training_inputs(parties), e_settings=settings())
        # Execute: one epoch each
        rows = _epochs(pair, 1)[0]
        runs[label] = (rows, _total(pair), pair_steps(pair))
    # Assert: about 10x the rows, identical encryptions, decryptions, re-randomisations and
    # scalar products (every ciphertext operation), identical steps
    (rows_few, few, steps_few), (rows_10x, many, steps_10x) = runs["few"], runs["10x"]
    assert rows_10x > 6 * rows_few
    assert steps_few == steps_10x
    assert few.encryptions == many.encryptions > 0
    assert few.decryptions == many.decryptions > 0
    assert few.rerandomisations == many.rerandomisations > 0
    assert few.products == many.products > 0


def test_every_user_is_in_exactly_one_step_per_epoch_whatever_its_activity() -> None:
    # Prepare: users with 3 to 60 positives (activity differs 20x)
    parties = tiny_parties(n_items=300, positives=(3, 61))
    pair = build_pair(tiny_training_inputs(parties), e_settings=settings())
    user_rows = pair.split.user_rows()
    activity = np.array([len(r) for r in user_rows.values()])
    assert activity.max() > 5 * activity.min()
    # Execute: two epochs, recording what P receives
    _epochs(pair, 2)
    steps = [m.users for m in pair.p_rec.of_type(SecureForwardIns) if m.train]
    per = pair_steps(pair)
    assert len(steps) == 2 * per
    everyone = np.array(sorted(user_rows), dtype=np.int64)
    orders = []
    for epoch in (steps[:per], steps[per:]):
        # Assert: each training user in exactly one step; every step but the last is full
        seen = np.concatenate(epoch)
        np.testing.assert_array_equal(np.sort(seen), everyone)
        assert all(len(u) == USERS_PER_STEP for u in epoch[:-1])
        assert all(np.unique(u).size == len(u) for u in epoch)
        orders.append(seen)
    assert not np.array_equal(orders[0], orders[1])  # a fresh random order each epoch
