"""Run reports: Markdown plus PNG plots (loss curves, metrics, time) from a results dict.

The input is the JSON ``vfl compare`` or a pilot writes: ``{"models": {name: row}}`` where a
row holds the metrics, ``loss_curve`` and ``wall_seconds`` (and optionally ``cold_start``, the
metrics of the least active test users). A federated run may add ``phases``: a list of
``{"phase", "seconds", "bytes_sent", "bytes_received"}`` as seen by E, plotted as the cost
breakdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vfl.evaluation.quality import plot_validation, quality_lines, training_lines
from vfl.storage import atomic_path, atomic_write_text, ensure_dir


def plot_losses(models: dict[str, Any], path: Path) -> Path:
    """Training loss per epoch for every model."""
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":")]
    for i, (name, row) in enumerate(models.items()):
        curve = row["loss_curve"]
        marker, line = styles[i % len(styles)]  # distinct styles: equal curves stay visible
        ax.plot(
            range(1, len(curve) + 1),
            curve,
            marker=marker,
            linestyle=line,
            markersize=9 - 1.5 * (i % len(styles)),
            label=name,
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set(
        ylim=(0, 1.1),
        ylabel="score on the test users",
        title="Test metrics (best validation epoch)",
    )
    ax.legend(fontsize=8)
    names = list(models)
    secs = [max(float(models[n]["wall_seconds"]), 0.01) for n in names]
    bars = ax_t.barh(names, secs, color="grey")
    ax_t.bar_label(bars, labels=[f"{v:.1f} s" for v in secs], fontsize=8)
    xlabel = "training seconds"
    if max(secs) / min(secs) > 50:  # encrypted runs dwarf the rest: log scale keeps all visible
        ax_t.set_xscale("log")
        xlabel += " (log scale)"
    ax_t.margins(x=0.25)
    ax_t.set(xlabel=xlabel, title="Cost")
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


def _amount(value: float, unit: str) -> str:
    """Bar label; small traffic in kB so a handshake does not read as 0.00 MB."""
    if unit == "MB" and value < 0.1:
        return f"{value * 1e3:.1f} kB"
    return f"{value:.2f} {unit}"


def plot_phases(phases: list[dict[str, Any]], path: Path) -> Path:
    """Wall seconds and megabytes (sent + received by E) of each phase of a federated run."""
    names = [str(p["phase"]) for p in phases]
    secs = [float(p["seconds"]) for p in phases]
    mbytes = [(int(p["bytes_sent"]) + int(p["bytes_received"])) / 1e6 for p in phases]
    height = max(3.0, 0.35 * len(names) + 1.5)
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(10, height), sharey=True)
    for ax, values, unit, color in (
        (ax_t, secs, "s", "tab:blue"),
        (ax_b, mbytes, "MB", "tab:orange"),
    ):
        bars = ax.barh(names, values, color=color)
        ax.bar_label(bars, labels=[_amount(v, unit) for v in values], fontsize=8)
        ax.margins(x=0.25)
    ax_t.invert_yaxis()  # phases top to bottom in the order they ran
    ax_t.set(xlabel="wall seconds", title="Time per phase")
    ax_b.set(xlabel="megabytes exchanged by E (sent + received)", title="Traffic per phase")
    fig.tight_layout()
    _save(fig, path)
    return path


def _cold_start_lines(models: dict[str, Any], k: int) -> list[str]:
    """Table of the cold-start users' metrics, when the rows carry them."""
    rows = {name: r["cold_start"] for name, r in models.items() if "cold_start" in r}
    if not rows:
        return []
    limit = next(iter(rows.values()))["max_train_positives"]
    lines = [
        "",
        f"Cold-start test users (at most {limit} training positives), where P's features "
        "should matter most:",
        "",
        f"| model | HR@{k} | NDCG@{k} | AUC | AUC gain over E alone | AUC gain, all users |",
        "|---|---|---|---|---|---|",
    ]
    base = rows.get("e_alone")
    for name, c in rows.items():
        gain = "" if base is None else f"{c['auc'] - base['auc']:+.4f}"
        overall = (
            ""
            if "e_alone" not in models
            else f"{models[name]['auc'] - models['e_alone']['auc']:+.4f}"
        )
        lines.append(
            f"| {name} | {c[f'hr@{k}']:.4f} | {c[f'ndcg@{k}']:.4f} | {c['auc']:.4f} | {gain} | "
            f"{overall} |"
        )
    return lines


_GROUP_TITLES = {
    "known_to_all": "known to every partner",
    "known_to_some": "known to some partners",
    "e_only": "known to no partner (E-only path)",
}


def _group_lines(models: dict[str, Any], k: int) -> list[str]:
    """Table of the test metrics per group of E's users (which partners know them)."""
    rows = {name: r["groups"] for name, r in models.items() if r.get("groups")}
    if not rows:
        return []
    lines = [
        "",
        "Test users by which partners know them (E trains and scores all of its users; a "
        "user a partner does not know gets that partner's learned stand-in vector):",
        "",
        f"| model | group | test users | HR@{k} | NDCG@{k} | AUC |",
        "|---|---|---|---|---|---|",
    ]
    for name, groups in rows.items():
        for g, m in groups.items():
            lines.append(
                f"| {name} | {_GROUP_TITLES.get(g, g)} | {m['test_users']} | "
                f"{m[f'hr@{k}']:.4f} | {m[f'ndcg@{k}']:.4f} | {m['auc']:.4f} |"
            )
    return lines


def _partner_lines(partners: dict[str, Any], k: int) -> list[str]:
    """Each partner's gain: the run with every partner minus the run without it."""
    if not partners:
        return []
    runs, gain = partners["runs"], partners["gain"]
    full = runs["+".join(gain)]
    lines = [
        "",
        f"Gain of each partner's features ({partners['mode']}; over all of E's test users): "
        "the model with every partner minus the model without that partner.",
        "",
        f"| partner | users it knows | HR@{k} gain | NDCG@{k} gain | AUC gain |",
        "|---|---|---|---|---|",
    ]
    for name, g in gain.items():
        lines.append(
            f"| {name} | {full['aligned_users'].get(name, '?')} | {g[f'hr@{k}']:+.4f} | "
            f"{g[f'ndcg@{k}']:+.4f} | {g['auc']:+.4f} |"
        )
    lines += ["", f"| partners | HR@{k} | NDCG@{k} | AUC | best epoch |", "|---|---|---|---|---|"]
    for key, r in runs.items():
        lines.append(
            f"| {key.replace('+', ' + ')} | {r[f'hr@{k}']:.4f} | {r[f'ndcg@{k}']:.4f} | "
            f"{r['auc']:.4f} | {r['best_epoch']} |"
        )
    return lines


def _phase_lines(phases: list[dict[str, Any]]) -> list[str]:
    """Table of wall time and bytes per phase of the federated run."""
    lines = ["", "| phase | seconds | bytes sent by E | bytes received by E |", "|---|---|---|---|"]
    for p in phases:
        lines.append(
            f"| {p['phase']} | {float(p['seconds']):.2f} | {int(p['bytes_sent']):,} | "
            f"{int(p['bytes_received']):,} |"
        )
    return [*lines, "", "![cost per phase](phases.png)"]


def _same_model_note(results: dict[str, Any]) -> str:
    """How far the plaintext and encrypted rows are comparable."""
    if results.get("federated", {}).get("same_local_seeds"):
        return (
            "Both federated runs went through the same processes with the same parties' local "
            "seeds, the same job seed and the same aligned order, so they train the same model "
            "and differ only by the fixed-point error of the encrypted layer."
        )
    return (
        "Both train the same model; in a federated run P draws its initial weights from its "
        "own secret randomness, so the two runs start and proceed differently."
    )


def _pilot_lines(results: dict[str, Any], out_dir: Path) -> list[str]:
    """The pilot's sections: both runs phase by phase, cost of privacy, PSI."""
    from vfl.evaluation.pilot_sections import phase_run_lines, plot_phase_runs, psi_lines

    runs = results["phase_runs"]
    plot_phase_runs(runs, out_dir / "phase_runs.png")
    lines = [
        *phase_run_lines(runs, results.get("cost_of_privacy")),
        *psi_lines(results.get("psi") or {}),
    ]
    if results.get("privacy"):
        from vfl.evaluation.privacy_report import privacy_lines

        lines += privacy_lines(results["privacy"])
    return lines


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write ``report.md`` with its plots next to it; returns the Markdown path.

    Each file is replaced atomically, so a failed run leaves the previous report readable.

    Raises:
        StorageError: the directory cannot be created or written (disk full, permission).
    """
    ensure_dir(out_dir)
    models, k = results["models"], results.get("k", 10)
    plot_losses(models, out_dir / "loss_curves.png")
    plot_metrics(models, k, out_dir / "metrics.png")
    phases = results.get("phases") or []
    if phases:
        plot_phases(phases, out_dir / "phases.png")
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
            f"{models['split_encrypted'].get('cost_of_privacy', '?')}x. "
            + _same_model_note(results),
        ]
    lines += _cold_start_lines(models, k)
    lines += _group_lines(models, k)
    lines += _partner_lines(results.get("partners") or {}, k)
    if all("valid_ndcg_curve" in r for r in models.values()):
        plot_validation(models, k, out_dir / "validation_curves.png")
        lines += training_lines(models, k)
    lines += quality_lines(results)
    if results.get("phase_runs"):
        lines += _pilot_lines(results, out_dir)
    elif phases:
        lines += _phase_lines(phases)
    lines += ["", "![loss curves](loss_curves.png)", "", "![metrics](metrics.png)", ""]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
