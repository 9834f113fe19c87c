"""The report section "What each party could infer", from a privacy audit's results.

Input: the ``privacy`` entry of a pilot's results, made by
:func:`vfl.training.privacy_audit.audit_summary` from two audited runs of the pilot's job:
one with the job's own ``[privacy]`` settings (the run the pilot made) and one with the
label defence off.
"""

from __future__ import annotations

from typing import Any


def _auc(value: float) -> str:
    return f"{value:.2f}"


def privacy_lines(privacy: dict[str, Any]) -> list[str]:
    """Markdown of the section."""
    run, bare = privacy["as_run"], privacy["no_defence"]
    hr = next(k for k in run if k.startswith("test_hr@"))
    audit = run["audit"]
    lines = [
        "",
        "## What each party could infer",
        "",
        "Measured by attacking what P actually received in a replay of this job (same seeds, "
        "the protocol's plaintext mode: the same messages), `benchmarks/privacy.py` method. "
        "AUC is max(AUC, 1 - AUC), worst stage of training (first steps, then each epoch); "
        "0.5 is chance.",
        "",
        f"| what P could infer | no defence | this run (label noise {privacy['label_noise']} "
        f"x clip {privacy['label_clip']}) |",
        "|---|---|---|",
        f"| E's activity (above-median purchases) from gradient norms | "
        f"{_auc(bare['activity_auc'])} | {_auc(run['activity_auc'])} |",
        f"| label residual from gradient direction (cosine) | "
        f"{_auc(bare['direction_auc'])} | {_auc(run['direction_auc'])} |",
        f"| one row's label (optimal test, row-level counterfactual) | "
        f"{_auc(bare['counterfactual_auc'])} | {_auc(run['counterfactual_auc'])} |",
        f"| test AUC / {hr.removeprefix('test_')} of the model | "
        f"{bare['test_auc']:.4f} / {bare[hr]:.4f} | {run['test_auc']:.4f} / {run[hr]:.4f} |",
        "",
        f"Activity audit: every aligned user appeared between {audit['min_appearances']} and "
        f"{audit['max_appearances']} times per epoch; "
        f"{'every' if audit['every_evaluation_all_users'] else 'NOT every'} one of the "
        f"{audit['evaluations']} evaluations asked P for all aligned users. Per-user "
        f"label-DP figure of the noise over {privacy['epochs']} epochs: "
        f"epsilon = {privacy['epsilon_per_user']} at delta = 1e-5 (per release of a user's own "
        "gradient; see vfl/training/defences.py for what it does not cover).",
    ]
    return lines
