"""What a curious P can infer about E's users from what it receives in training.

P receives, per training step, the users it covers and ``∂L/∂b_u`` for each of them, and per
evaluation the users whose ``z_B`` E asks for. Attacks on that view, each scored against E's
truth (which only the benchmark and the pilot's audit hold) by ROC AUC, reported as
``max(AUC, 1 - AUC)`` because P can learn an attack's orientation from a few known users:

Stages: the first 10 steps (or as many as cover 320 users, so that an AUC can be told from
chance), then each epoch.

1. **Activity** (gradient norm): score ``‖∂L/∂b_u‖`` at the user's step of an epoch against
   "more training positives than the median user".
2. **Label direction** (cosine; Li et al., ICLR 2022, arxiv.org/abs/2102.08504): within a
   stage, the cosine of each gradient with the first gradient of the stage, against "label
   residual ``mean_r(y_r - p_r)`` above the stage's median".
3. **Row-level counterfactual**: the best test between "this user's rows as they are" and
   "one positive of this user relabelled negative". The change moves ``δ_u`` by
   ``Δ_u = w_r·∂logit_r/∂z_u``; with Gaussian noise of std ``s`` per coordinate of ``δ``
   (and ``W_B`` square and invertible, so ``∂L/∂b`` tells P exactly as much as ``δ``), the
   optimal test's AUC is ``Φ(‖Δ_u‖ / (s·√2))``, 1 without noise.
4. **Activity audit**: how many times each aligned user appears in the training steps of
   each epoch, and whether every evaluation asked for the same set of users.

A null reference: for ``n`` users split in two halves, ``max(AUC, 1 - AUC)`` of a
meaningless score exceeds ``0.5 + 1.96·sqrt((n + 1) / (3·n²))`` one time in twenty; each
figure carries that bound so a reader can tell signal from sampling noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vfl.evaluation.metrics import roc_auc


@dataclass(frozen=True)
class PassiveView:
    """What P received: per training step the users and ``∂L/∂b`` (m x d), and per
    evaluation the users asked for."""

    step_users: list[np.ndarray]
    step_grads: list[np.ndarray]
    eval_users: list[np.ndarray]


@dataclass(frozen=True)
class ActiveTruth:
    """E's side of the same steps, to score the attacks with."""

    n_users: int
    activity: np.ndarray  # (n_users,) training positives per aligned user
    residual: list[np.ndarray]  # per step, per user: mean_r (y_r - p_r)
    flip_norm: list[np.ndarray]  # per step, per user: ‖Δ_u‖ for one positive relabelled (0: none)
    noise_std: list[float]  # per step: std of the defence's noise on each coordinate of δ


@dataclass(frozen=True)
class AttackFigure:
    """One attack at one stage: its AUC, the users scored and the 95% null bound."""

    stage: str
    auc: float
    users: int
    null_bound: float


@dataclass(frozen=True)
class AuditFigures:
    """The activity audit: appearances per user per epoch and the evaluation sets."""

    min_appearances: int
    max_appearances: int
    evaluations: int
    every_evaluation_all_users: bool


@dataclass(frozen=True)
class LabelAttackReport:
    """Every figure of this module for one run."""

    activity: list[AttackFigure]
    direction: list[AttackFigure]
    counterfactual_auc: list[AttackFigure]
    audit: AuditFigures

    def worst(self) -> dict[str, float]:
        """The largest AUC of each attack over the stages."""
        return {
            "activity_auc": max(f.auc for f in self.activity),
            "direction_auc": max(f.auc for f in self.direction),
            "counterfactual_auc": max(f.auc for f in self.counterfactual_auc),
        }


def null_bound(n: int) -> float:
    """95% quantile of ``max(AUC, 1 - AUC)`` for a random score on ``n`` balanced users."""
    return 0.5 + 1.96 * math.sqrt((n + 1) / (3.0 * n * n)) if n > 1 else 1.0


def oriented_auc(target: np.ndarray, score: np.ndarray) -> float:
    """``max(AUC, 1 - AUC)``; 0.5 when ``target`` holds one class only."""
    target = np.asarray(target, dtype=bool)
    if target.all() or not target.any():
        return 0.5
    auc = roc_auc(target, score)
    return max(auc, 1.0 - auc)


def _figure(stage: str, target: np.ndarray, score: np.ndarray) -> AttackFigure:
    return AttackFigure(
        stage, round(oriented_auc(target, score), 4), len(score), round(null_bound(len(score)), 4)
    )


EARLY_USERS = 320  # the first stage covers at least this many users (null bound ≈ 0.56)


def _stages(step_users: list[np.ndarray], steps_per_epoch: int) -> list[tuple[str, range]]:
    """The first 10 steps (more if they cover fewer than EARLY_USERS), then each epoch."""
    n_steps = len(step_users)
    m = max(len(step_users[0]), 1) if step_users else 1
    early = min(max(10, -(-EARLY_USERS // m)), n_steps)
    out = [(f"steps 1-{early}", range(early))]
    for e in range(-(-n_steps // steps_per_epoch)):
        steps = range(e * steps_per_epoch, min((e + 1) * steps_per_epoch, n_steps))
        out.append((f"epoch {e + 1}", steps))
    return out


def activity_attack(
    view: PassiveView, truth: ActiveTruth, steps_per_epoch: int
) -> list[AttackFigure]:
    """Attack 1 per stage: gradient norm against above-median training positives."""
    above = truth.activity > np.median(truth.activity)
    out = []
    for name, steps in _stages(view.step_users, steps_per_epoch):
        users = np.concatenate([view.step_users[s] for s in steps])
        norms = np.concatenate([np.linalg.norm(view.step_grads[s], axis=1) for s in steps])
        out.append(_figure(name, above[users], norms))
    return out


def direction_attack(
    view: PassiveView, truth: ActiveTruth, steps_per_epoch: int
) -> list[AttackFigure]:
    """Attack 2 per stage: cosine with the stage's first gradient against the residual."""
    out = []
    for name, steps in _stages(view.step_users, steps_per_epoch):
        grads = np.concatenate([view.step_grads[s] for s in steps])
        residual = np.concatenate([truth.residual[s] for s in steps])
        ref = grads[0]
        cos = grads @ ref / np.maximum(np.linalg.norm(grads, axis=1) * np.linalg.norm(ref), 1e-300)
        out.append(_figure(name, (residual > np.median(residual))[1:], cos[1:]))
    return out


def counterfactual_attack(
    view: PassiveView, truth: ActiveTruth, steps_per_epoch: int
) -> list[AttackFigure]:
    """Attack 3 per stage: mean optimal-test AUC over users with a positive to relabel."""
    out = []
    for name, steps in _stages(view.step_users, steps_per_epoch):
        aucs = []
        for s in steps:
            norms = truth.flip_norm[s][truth.flip_norm[s] > 0]
            sd = truth.noise_std[s]
            aucs += [1.0 if sd == 0 else _phi(float(x) / (sd * math.sqrt(2))) for x in norms]
        out.append(
            AttackFigure(name, round(float(np.mean(aucs)) if aucs else 0.5, 4), len(aucs), 0.5)
        )
    return out


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def activity_audit(view: PassiveView, n_users: int, steps_per_epoch: int) -> AuditFigures:
    """Attack 4: appearances of every aligned user per epoch; evaluation sets."""
    counts = []
    for e in range(-(-len(view.step_users) // steps_per_epoch)):
        chunk = view.step_users[e * steps_per_epoch : (e + 1) * steps_per_epoch]
        counts.append(np.bincount(np.concatenate(chunk), minlength=n_users))
    every = np.stack(counts)
    everyone = np.arange(n_users)
    all_users = all(np.array_equal(np.sort(u), everyone) for u in view.eval_users)
    return AuditFigures(int(every.min()), int(every.max()), len(view.eval_users), all_users)


def label_attacks(view: PassiveView, truth: ActiveTruth, steps_per_epoch: int) -> LabelAttackReport:
    """Attacks 1-4 on one run."""
    return LabelAttackReport(
        activity=activity_attack(view, truth, steps_per_epoch),
        direction=direction_attack(view, truth, steps_per_epoch),
        counterfactual_auc=counterfactual_attack(view, truth, steps_per_epoch),
        audit=activity_audit(view, truth.n_users, steps_per_epoch),
    )
