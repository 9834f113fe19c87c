"""The run report: cold-start group, phase cost table and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vfl.evaluation.cold_start import cold_start_group
from vfl.evaluation.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(auc: float, cold_auc: float) -> dict[str, Any]:
    metrics = {"hr@10": auc - 0.3, "ndcg@10": auc - 0.5, "auc": auc, "logloss": 0.2}
    return {
        **metrics,
        "cold_start": {**metrics, "auc": cold_auc, "max_train_positives": 3},
        "best_epoch": 2,
        "wall_seconds": 12.5,
        "loss_curve": [0.5, 0.4, 0.35],
    }


def test_cold_start_group_takes_least_active_users_with_ties() -> None:
    # Prepare: training positives per user 0..4 are 3, 1, 1, 0, 5
    train_users = np.array([0, 0, 0, 1, 2, 4, 4, 4, 4, 4])
    # Execute
    group = cold_start_group(train_users, np.array([0, 1, 2, 3, 4]), 5, 0.4)
    # Assert: the 0.4 quantile of (3, 1, 1, 0, 5) is 1 -> users 1, 2 (tie) and 3
    assert group.max_train_positives == 1
    assert group.rows.tolist() == [False, True, True, True, False]


def test_cold_start_quantile_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="quantile"):
        cold_start_group(np.array([0]), np.array([0]), 1, 0.0)


def test_report_has_cold_start_and_phase_tables_and_valid_pngs(tmp_path: Path) -> None:
    # Prepare
    results = {
        "job": "pilot",
        "k": 10,
        "models": {
            "e_alone": _row(0.70, 0.61),
            "split_plaintext": _row(0.80, 0.77),
            "split_encrypted": _row(0.799, 0.768),
            "centralised": _row(0.81, 0.78),
        },
        "phases": [
            {"phase": "handshake", "seconds": 0.4, "bytes_sent": 900, "bytes_received": 800},
            {"phase": "psi", "seconds": 3.1, "bytes_sent": 64_000, "bytes_received": 128_000},
            {"phase": "epoch 1", "seconds": 50.0, "bytes_sent": 2e6, "bytes_received": 6e6},
        ],
    }
    # Execute
    md = write_report(results, tmp_path).read_text()
    # Assert
    assert "| split_encrypted | 0.4990 | 0.2990 | 0.7680 |" in md  # cold-start row
    assert "at most 3 training positives" in md
    assert "| psi | 3.10 | 64,000 | 128,000 |" in md
    for png in ("loss_curves.png", "metrics.png", "phases.png"):
        data = (tmp_path / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
        assert f"]({png})" in md


def test_report_without_phases_writes_no_phase_plot(tmp_path: Path) -> None:
    results = {"models": {"e_alone": _row(0.7, 0.6)}}
    md = write_report(results, tmp_path).read_text()
    assert not (tmp_path / "phases.png").exists()
    assert "phases.png" not in md


def test_report_has_a_row_per_user_group_of_the_federated_model(tmp_path: Path) -> None:
    # Prepare: the encrypted run scored P's users and E's users P does not know
    row = _row(0.8, 0.7)
    metrics = {"hr@10": 0.5, "ndcg@10": 0.3, "auc": 0.81, "logloss": 0.2}
    row["groups"] = {
        "known_to_all": {**metrics, "test_users": 90},
        "e_only": {**metrics, "hr@10": 0.41, "test_users": 12},
    }
    results = {"models": {"e_alone": _row(0.7, 0.6), "split_encrypted": row}}
    # Execute
    md = write_report(results, tmp_path).read_text()
    # Assert: one line per group, with its users and metrics
    assert "| split_encrypted | known to every partner | 90 | 0.5000 | 0.3000 | 0.8100 |" in md
    assert "| split_encrypted | known to no partner (E-only path) | 12 | 0.4100 |" in md
    assert md.count("| e_alone | known") == 0


def test_report_shows_stopping_validation_curves_and_quality_beside_standard_models(
    tmp_path: Path,
) -> None:
    # Prepare: two seeds of two models on MovieLens, as `vfl compare --seeds 2` writes them
    from vfl.training.summary import seed_noise

    def row(hr: float, best: int) -> dict[str, Any]:
        r = _row(0.9, 0.9)
        curve = [0.30, 0.41, 0.45, 0.44, 0.43][: best + 3]
        return {
            **r,
            "hr@10": hr,
            "best_epoch": best,
            "epochs_trained": best + 3,
            "stopped": "patience",
            "valid_ndcg_curve": curve,
        }

    per_seed = {
        7: {"e_alone": row(0.70, 2), "split_plaintext": row(0.72, 2)},
        8: {"e_alone": row(0.68, 1), "split_plaintext": row(0.74, 2)},
    }
    results = {
        "job": "movielens",
        "dataset": "movielens",
        "k": 10,
        "models": per_seed[7],
        "noise": seed_noise(per_seed, k=10),
    }

    # Execute
    report = write_report(results, tmp_path).read_text()

    # Assert
    assert "| e_alone | 2 | 5 | patience | 0.300 0.410 0.450 0.440 0.430 |" in report
    assert (tmp_path / "validation_curves.png").read_bytes()[:8] == PNG_MAGIC
    assert "| split_plaintext | 0.730 ± 0.014 |" in report  # mean and sample sd of 0.72, 0.74
    for standard in ("| NeuMF | 0.655 |", "| BPR | 0.664 |", "| LightGCN | 0.665 |"):
        assert standard in report
    assert "seeds [7, 8]" in report
