"""Report sections on how well each model trained and how good it is (issue 15).

* **Training**: per model, the selected epoch (best validation NDCG@K), how many epochs ran and
  why training stopped, and the validation NDCG@K curve (also plotted), so a reader sees the
  run reached its plateau.
* **Quality**: the run's test figures beside standard models measured on the same protocol
  (:data:`STANDARD_MODELS`), and the run-to-run noise over seeds when the results hold it
  (``noise``: mean and sample standard deviation per model and metric, from
  ``vfl compare --seeds N``), so that a difference can be judged against the noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from vfl.evaluation.pilot_sections import save_figure


@dataclass(frozen=True)
class StandardModel:
    """A standard recommender's test figure on one dataset under vfl's protocol."""

    name: str
    hr_at_10: float
    how: str


# Measured on vfl's MovieLens-100K split (leave-last-out by time, the same 99 sampled
# negatives per user) with RecBole 1.2.1's own trainers, as reported in issue 15.
STANDARD_MODELS: dict[str, tuple[StandardModel, ...]] = {
    "movielens": (
        StandardModel("NeuMF", 0.655, "RecBole 1.2.1, vfl's split and candidates"),
        StandardModel("BPR", 0.664, "RecBole 1.2.1, vfl's split and candidates"),
        StandardModel("LightGCN", 0.665, "RecBole 1.2.1, vfl's split and candidates"),
    ),
}


def standard_models(dataset: str) -> tuple[StandardModel, ...]:
    """The standard models measured on ``dataset`` (matched by name, e.g. ``movielens-100k``)."""
    for key, rows in STANDARD_MODELS.items():
        if key in dataset.lower():
            return rows
    return ()


def plot_validation(models: dict[str, Any], k: int, path: Path) -> Path:
    """Validation NDCG@K per epoch for every model, the selected epoch marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, row in models.items():
        curve = row.get("valid_ndcg_curve") or []
        (line,) = ax.plot(range(1, len(curve) + 1), curve, marker=".", label=name)
        best = int(row.get("best_epoch", 0))
        if 1 <= best <= len(curve):
            ax.plot([best], [curve[best - 1]], marker="*", markersize=14, color=line.get_color())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=f"validation NDCG@{k}", title="Validation curves (* selected)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def training_lines(models: dict[str, Any], k: int) -> list[str]:
    """Markdown: selected epoch, epochs trained, stop reason, validation curve per model."""
    lines = [
        "",
        "## Training to convergence",
        "",
        f"Early stopping on validation NDCG@{k}; the test metrics above are those of the "
        "selected epoch, read once.",
        "",
        f"| model | selected epoch | epochs trained | stopped by | validation NDCG@{k} per epoch |",
        "|---|---|---|---|---|",
    ]
    for name, r in models.items():
        curve = " ".join(f"{v:.3f}" for v in r.get("valid_ndcg_curve") or [])
        lines.append(
            f"| {name} | {r.get('best_epoch', '?')} | {r.get('epochs_trained', '?')} | "
            f"{r.get('stopped', '?')} | {curve} |"
        )
    return [*lines, "", "![validation curves](validation_curves.png)"]


def quality_lines(results: dict[str, Any]) -> list[str]:
    """Markdown: this run's HR@10 beside the standard models, and the noise over seeds."""
    k = results.get("k", 10)
    noise: dict[str, Any] = results.get("noise") or {}
    standard = standard_models(str(results.get("dataset", results.get("job", ""))))
    if k != 10 or (not standard and not noise):
        return []
    lines = ["", "## Quality against standard models", ""]
    lines += [f"| model | HR@{k} | NDCG@{k} | AUC | source |", "|---|---|---|---|---|"]
    for name, r in results["models"].items():
        n = noise.get(name)
        lines.append(
            f"| {name} | {_cell(r, n, 'hr@10')} | {_cell(r, n, 'ndcg@10')} | "
            f"{_cell(r, n, 'auc')} | {_source(n)} |"
        )
    lines += [f"| {m.name} | {m.hr_at_10:.3f} | | | {m.how} |" for m in standard]
    if noise:
        seeds = next(iter(noise.values()))["seeds"]
        lines += [
            "",
            f"Mean ± sample standard deviation over seeds {seeds} (each seed draws "
            "its own candidates, negatives and initial weights).",
        ]
    return lines


def _cell(row: dict[str, Any], noise: dict[str, Any] | None, metric: str) -> str:
    if noise is None:
        return f"{row[metric]:.3f}"
    return f"{noise[metric]['mean']:.3f} ± {noise[metric]['sd']:.3f}"


def _source(noise: dict[str, Any] | None) -> str:
    return "this run" if noise is None else f"this run, {len(noise['seeds'])} seeds"
