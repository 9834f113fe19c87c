"""The pilot's extra report sections: both federated runs phase by phase (time and bytes),
the cost of privacy, and the PSI figures. Input: the ``phase_runs``, ``cost_of_privacy`` and
``psi`` entries of a pilot's results (see :mod:`vfl.cli.pilot_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from vfl.storage import atomic_path


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as PNG atomically and close it (StorageError if the disk is full)."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)


def _phase_names(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    names: list[str] = []
    for phases in runs.values():
        names += [str(p["phase"]) for p in phases if str(p["phase"]) not in names]
    return names


def _values(phases: list[dict[str, Any]], names: list[str]) -> tuple[list[float], list[float]]:
    by = {str(p["phase"]): p for p in phases}
    secs = [float(by[n]["seconds"]) if n in by else 0.0 for n in names]
    mbytes = [
        (int(by[n]["bytes_sent"]) + int(by[n]["bytes_received"])) / 1e6 if n in by else 0.0
        for n in names
    ]
    return secs, mbytes


def plot_phase_runs(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Grouped bars per phase, one colour per federated run: wall seconds and megabytes."""
    names = _phase_names(runs)
    y = np.arange(len(names))
    height = 0.8 / max(len(runs), 1)
    fig, (ax_t, ax_b) = plt.subplots(
        1, 2, figsize=(11, max(3.5, 0.45 * len(names) + 1.5)), sharey=True
    )
    for i, (run, phases) in enumerate(runs.items()):
        secs, mbytes = _values(phases, names)
        ax_t.barh(y + i * height, [max(s, 1e-3) for s in secs], height, label=run)
        ax_b.barh(y + i * height, [max(b, 1e-4) for b in mbytes], height, label=run)
    ax_t.set_yticks(y + height * (len(runs) - 1) / 2, names)
    ax_t.invert_yaxis()  # phases top to bottom in the order they ran
    for ax in (ax_t, ax_b):
        ax.set_xscale("log")  # encrypted epochs dwarf a handshake: log keeps all visible
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    ax_t.set(xlabel="wall seconds (log scale)", title="Time per phase")
    ax_b.set(xlabel="megabytes sent + received by E (log scale)", title="Traffic per phase")
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value}x"


def phase_run_lines(
    runs: dict[str, list[dict[str, Any]]], cost: dict[str, Any] | None
) -> list[str]:
    """Markdown: each phase's seconds and bytes in both runs, and encrypted / plaintext."""
    names = _phase_names(runs)
    labels = list(runs)
    head = " | ".join(f"{r} s | {r} MB" for r in labels)
    lines = [
        "",
        "## Cost per phase (wall time at E, bytes E sent + received on the wire)",
        "",
        f"| phase | {head} | time x | bytes x |",
        "|---|" + "---|---|" * len(labels) + "---|---|",
    ]
    ratios = {p["phase"]: p for p in (cost or {}).get("per_phase", [])}
    for n in names:
        cells = []
        for r in labels:
            secs, mbytes = _values(runs[r], [n])
            cells.append(f"{secs[0]:.2f} | {mbytes[0]:.3f}")
        q = ratios.get(n, {})
        lines.append(
            f"| {n} | {' | '.join(cells)} | {_fmt(q.get('time'))} | {_fmt(q.get('bytes'))} |"
        )
    if cost:
        lines += [
            "",
            "**Cost of privacy** (encrypted / plaintext): training time "
            f"{_fmt(cost['training_time'])}, whole federated run {_fmt(cost['run_time'])}, "
            f"bytes {_fmt(cost['bytes'])}.",
        ]
    return [*lines, "", "![cost per phase, both runs](phase_runs.png)"]


def psi_lines(psi: dict[str, Any]) -> list[str]:
    """Markdown: the PSI figures."""
    if not psi:
        return []
    return [
        "",
        "## PSI",
        "",
        "| E's ids | P's ids | intersection | duplicates | empty ids | seconds | bytes E sent | "
        "bytes E received |",
        "|---|---|---|---|---|---|---|---|",
        f"| {psi.get('e_ids')} | {psi.get('p_ids', '?')} | {psi.get('intersection')} | "
        f"{psi.get('duplicates')} | {psi.get('empty_ids')} | {psi.get('seconds')} | "
        f"{psi.get('bytes_sent')} | {psi.get('bytes_received')} |",
        "",
        "Duplicate or empty ids are never dropped silently: PSI stops with an error naming "
        "them, so a finished run has none.",
    ]
