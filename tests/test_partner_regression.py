"""With one partner and the E-only users left out, the model is the two-party model of before
issue 16: numbers frozen from the main branch before the change, same seeds and data.

The frozen numbers were computed on main at commit 4dbb45a (before the list-of-partners API)
by the same run: ``tiny_parties(seed=3, n_users=40)`` (E: 40 users, 30 shared), the plan of
:func:`tests.partner_helpers.tiny_plan`, E's seed 11, P's seed 22, 512-bit keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import tiny_parties
from tests.partner_helpers import run_partners, tiny_plan
from vfl.party.partners import UserScope
from vfl.protocol.options import Mode

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
