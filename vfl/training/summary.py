"""A finished run as the JSON row reports read, and the noise over several seeds."""

from __future__ import annotations

from typing import Any

import numpy as np

from vfl.training.loop import FitResult


def summarise(result: FitResult) -> dict[str, Any]:
    """Test metrics at the best validation epoch (the only place test metrics are read),
    plus why and when training stopped, timing, the loss and validation NDCG curves."""
    best = result.best
    cold = (
        {}
        if best.test_cold is None
        else {
            "cold_start": {
                **best.test_cold.as_dict(),
                "max_train_positives": result.cold_max_train_positives,
            }
        }
    )
    groups = (
        {
            "groups": {
                g: {**m.as_dict(), "test_users": result.group_test_users.get(g, 0)}
                for g, m in best.test_groups.items()
            }
        }
        if best.test_groups
        else {}
    )
    return {
        **best.test.as_dict(),
        **cold,
        **groups,
        "valid": best.valid.as_dict(),
        "best_epoch": best.epoch,
        "epochs_trained": len(result.history),
        "stopped": result.stopped.value,
        "wall_seconds": round(result.train_seconds, 2),
        "loss_curve": [round(r.train_loss, 5) for r in result.history],
        "valid_ndcg_curve": [round(r.valid.ndcg, 5) for r in result.history],
    }


def seed_noise(per_seed: dict[int, dict[str, Any]], *, k: int) -> dict[str, Any]:
    """Per model and metric, the mean and sample standard deviation over the seeds."""
    seeds = sorted(per_seed)
    noise: dict[str, Any] = {}
    for name in per_seed[seeds[0]]:
        entry: dict[str, Any] = {"seeds": seeds}
        for metric in (f"hr@{k}", f"ndcg@{k}", "auc", "logloss"):
            values = np.array([per_seed[s][name][metric] for s in seeds], dtype=float)
            sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            entry[metric] = {"mean": round(float(values.mean()), 4), "sd": round(sd, 4)}
        entry["best_epochs"] = [per_seed[s][name]["best_epoch"] for s in seeds]
        noise[name] = entry
    return noise


def gap(report: dict[str, Any], metric: str = "auc") -> dict[str, float]:
    """Split minus E-alone, and centralised minus split, for one metric."""
    m = report["models"]
    return {
        "split_minus_e_alone": float(
            np.round(m["split_plaintext"][metric] - m["e_alone"][metric], 4)
        ),
        "centralised_minus_split": float(
            np.round(m["centralised"][metric] - m["split_plaintext"][metric], 4)
        ),
    }
