"""Run reports: Markdown plus PNG plots (loss curves, metrics, time) from a results dict.

The input is the JSON ``vfl compare`` or a pilot writes: ``{"models": {name: row}}`` where a
row holds the metrics, ``loss_curve`` and ``wall_seconds``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from vfl.storage import atomic_path, atomic_write_text, ensure_dir


def plot_losses(models: dict[str, Any], path: Path) -> Path:
    """Training loss per epoch for every model."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, row in models.items():
        curve = row["loss_curve"]
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="training loss (BCE)", title="Loss curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_metrics(models: dict[str, Any], k: int, path: Path) -> Path:
    """Grouped bars of HR@K, NDCG@K and AUC per model, and training time."""
    metrics = [f"hr@{k}", f"ndcg@{k}", "auc"]
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(len(models), 1)
    for i, (name, row) in enumerate(models.items()):
        xs = [j + i * width for j in range(len(metrics))]
        bars = ax.bar(xs, [row[m] for m in metrics], width=width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set(ylim=(0, 1), title="Test metrics (best validation epoch)")
    ax.legend(fontsize=8)
    names = list(models)
    secs = [max(float(models[n]["wall_seconds"]), 0.01) for n in names]
    bars = ax_t.barh(names, secs, color="grey")
    ax_t.bar_label(bars, labels=[f"{v:.1f} s" for v in secs], fontsize=8)
    if max(secs) / min(secs) > 50:  # encrypted runs dwarf the rest: log scale keeps all visible
        ax_t.set_xscale("log")
    ax_t.set(xlabel="training seconds", title="Cost")
    fig.tight_layout()
    _save(fig, path)
    return path


def _save(fig: Figure, path: Path) -> None:
    """Write ``fig`` as PNG atomically and close it (StorageError if the disk is full)."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write ``report.md`` with its two plots next to it; returns the Markdown path.

    Each file is replaced atomically, so a failed run leaves the previous report readable.

    Raises:
        StorageError: the directory cannot be created or written (disk full, permission).
    """
    ensure_dir(out_dir)
    models, k = results["models"], results.get("k", 10)
    plot_losses(models, out_dir / "loss_curves.png")
    plot_metrics(models, k, out_dir / "metrics.png")
    lines = [
        f"# vfl report: {results.get('job', 'job')}",
        "",
        f"{results.get('aligned_users', '?')} aligned users, "
        f"{results.get('test_users', '?')} test users, held-out item ranked against "
        f"{results.get('test_negatives', 99)} sampled unseen items.",
        "",
        f"| model | HR@{k} | NDCG@{k} | AUC | log-loss | best epoch | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in models.items():
        lines.append(
            f"| {name} | {r[f'hr@{k}']:.4f} | {r[f'ndcg@{k}']:.4f} | {r['auc']:.4f} | "
            f"{r['logloss']:.4f} | {r['best_epoch']} | {r['wall_seconds']:.1f} |"
        )
    if "split_encrypted" in models and "split_plaintext" in models:
        lines += [
            "",
            f"Cost of privacy (encrypted / plaintext training time): "
            f"{models['split_encrypted'].get('cost_of_privacy', '?')}x. Both train the same "
            "model; in a federated run P draws its initial weights from its own secret "
            "randomness and users come in PSI order, so the two runs start and proceed "
            "differently.",
        ]
    lines += ["", "![loss curves](loss_curves.png)", "", "![metrics](metrics.png)", ""]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
