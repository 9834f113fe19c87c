"""With one partner and the E-only users left out, the model is the two-party model of before
issue 16: numbers frozen from the main branch before the change, same seeds and data.

The frozen numbers were computed on main at commit 4dbb45a (before the list-of-partners API)
by the same run: ``tiny_parties(seed=3, n_users=40)`` (E: 40 users, 30 shared), the plan of
:func:`tests.partner_helpers.tiny_plan`, E's seed 11, P's seed 22, 512-bit keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import tiny_parties
from tests.partner_helpers import run_partners, tiny_plan
from vfl.party.partners import UserScope, UserUniverse, partner_groups
from vfl.protocol.options import Mode
from vfl.training.loop import group_rows

# main @ 4dbb45a, train_active(active, plan, channel, alignment, ...), both modes alike
FROZEN = {
    "loss_curve": [0.89703, 0.80323, 0.6863],
    "valid_ndcg_curve": [0.06058, 0.11554, 0.12368],
    "auc": 0.43366666666666664,
    "hr@5": 0.2,
    "ndcg@5": 0.14160686411271092,
    "logloss": 0.47388609356766326,
}


@pytest.mark.parametrize("mode", [Mode.ENCRYPTED, Mode.PLAINTEXT])
def test_one_partner_without_e_only_users_is_the_model_of_before(
    tmp_path: Path, mode: Mode
) -> None:
    # Prepare: the data and seeds of the frozen run
    active, passive = tiny_parties(seed=3, n_users=40)
    # Execute: E-only users left out (UserScope.SHARED)
    run = run_partners(
        active, {"payments": passive}, tmp_path, plan=tiny_plan(mode), scope=UserScope.SHARED
    )
    # Assert: within the fixed-point error of the frozen numbers
    got = run.metrics["split_encrypted"]
    assert run.metrics["users"] == run.metrics["aligned_users"] == 30
    for key in ("loss_curve", "valid_ndcg_curve"):
        assert got[key] == pytest.approx(FROZEN[key], abs=2e-5), key
    for key in ("auc", "hr@5", "ndcg@5", "logloss"):
        assert got[key] == pytest.approx(FROZEN[key], abs=1e-4), key


def test_with_e_only_users_the_model_changes_and_scores_them(tmp_path: Path) -> None:
    # Prepare / Execute: the same job with E's 10 users that P does not know
    active, passive = tiny_parties(seed=3, n_users=40)
    run = run_partners(active, {"payments": passive}, tmp_path)
    # Assert: they train (a different trajectory) and are evaluated as their own group
    got = run.metrics["split_encrypted"]
    assert run.metrics["users"] == 40 and run.metrics["aligned_users"] == 30
    assert got["loss_curve"] != pytest.approx(FROZEN["loss_curve"], abs=1e-3)
    # ... and reported per group: P's 30 users and E's 10 others, every test user in one group
    groups = got["groups"]
    assert set(groups) == {"known_to_all", "e_only"}
    assert (
        groups["known_to_all"]["test_users"] + groups["e_only"]["test_users"]
        == (run.metrics["test_users"])
    )
    assert 0 < groups["e_only"]["test_users"] <= 10
    assert 0 < groups["known_to_all"]["test_users"] <= 30
    for g in groups.values():
        assert 0.0 <= g["hr@5"] <= 1.0 and 0.0 <= g["auc"] <= 1.0


def test_users_are_grouped_by_how_many_partners_know_them() -> None:
    # Prepare: five users of E; partner a knows 0, 1, 2; partner b knows 1, 3
    users = UserUniverse(
        ids=np.array(["u0", "u1", "u2", "u3", "u4"]),
        rows=np.arange(5),
        positions=(np.array([0, 1, 2, -1, -1]), np.array([-1, 0, -1, 1, -1])),
    )
    # Execute
    groups = partner_groups(users)
    # Assert: u1 by both, u0/u2/u3 by one, u4 by none
    assert np.flatnonzero(groups["known_to_all"]).tolist() == [1]
    assert np.flatnonzero(groups["known_to_some"]).tolist() == [0, 2, 3]
    assert np.flatnonzero(groups["e_only"]).tolist() == [4]
    # and the test list's rows of each group (users 4, 1, 4, 0: rows 0 and 2 are E-only)
    rows = group_rows(groups, np.array([4, 1, 4, 0]))
    assert {g: r.tolist() for g, r in rows.items()} == {
        "known_to_all": [1],
        "known_to_some": [3],
        "e_only": [0, 2],
    }
