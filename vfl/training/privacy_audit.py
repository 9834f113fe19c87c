"""The privacy audit: run the project's own protocol, record what P received, attack it.

The audit trains the secret-shared split network in one process over the in-memory channel,
in the protocol's plaintext mode: the same messages as the encrypted run and, from the same
seeds, the same ``∂L/∂b`` at P up to the fixed-point error, so the figures hold for the
encrypted run of the same job. A :class:`~vfl.protocol.recorder.RecordingChannel` keeps every
message P receives; P's view is decoded from those bytes exactly as P decodes them. E's truth
(per-user activity, label residuals, the counterfactual gradient changes) is taken at the cut
layer through the model's observer. :mod:`vfl.evaluation.label_attacks` scores the attacks.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vfl.config.job import PrivacyConfig
from vfl.crypto.encoding import dequantise
from vfl.evaluation.label_attacks import ActiveTruth, LabelAttackReport, PassiveView, label_attacks
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.messages import SecureBackwardIns, SecureForwardIns
from vfl.protocol.options import Mode
from vfl.protocol.recorder import RecordingChannel
from vfl.protocol.secure_layer import PassiveShare
from vfl.training.compare import Prepared, _fit, secure_model, secure_server
from vfl.training.defences import GaussianLabelNoise, label_epsilon
from vfl.training.inputs import Batch
from vfl.training.loop import FitResult
from vfl.training.secure import SecureSplitRecommender
from vfl.transport.channel import InMemoryChannel


@dataclass(frozen=True)
class AuditRun:
    """One audited training run: the attack figures, the fit, and E's final view of ``z_B``."""

    attacks: LabelAttackReport
    fit: FitResult
    z_b: np.ndarray  # (n_users, h): z_B of every aligned user at the last evaluation
    steps_per_epoch: int


class _TruthRecorder:
    """E's side of each step, taken at the cut (the model's observer)."""

    def __init__(self, model: SecureSplitRecommender) -> None:
        self.model = model
        self.residual: list[np.ndarray] = []
        self.flip_norm: list[np.ndarray] = []
        self.noise_std: list[float] = []

    def __call__(self, batch: Batch, z_user: torch.Tensor, logits: torch.Tensor) -> None:
        m = len(batch.users)
        w = torch.as_tensor(batch.row_weight)
        y = torch.as_tensor(batch.labels)
        local = torch.as_tensor(batch.row_user)
        with torch.no_grad():
            res = torch.zeros(m).index_add_(0, local, w * (y - torch.sigmoid(logits))) * m
        self.residual.append(res.numpy().astype(np.float64))
        # One positive per user relabelled: δ_u moves by w_r·∂logit_r/∂z_u.
        pos = np.flatnonzero(batch.labels == 1)
        _, first = np.unique(batch.row_user[pos], return_index=True)
        chosen = torch.as_tensor(pos[first])
        (grad,) = torch.autograd.grad((w[chosen] * logits[chosen]).sum(), z_user, retain_graph=True)
        self.flip_norm.append(np.linalg.norm(grad.numpy().astype(np.float64), axis=1))
        d = self.model.defence
        sd = d.multiplier * d.clip / m if isinstance(d, GaussianLabelNoise) else 0.0
        self.noise_std.append(sd)


def passive_view(recorded: RecordingChannel, share: PassiveShare) -> PassiveView:
    """P's view decoded from the messages it received, as P decodes them."""
    steps, grads, evals = [], [], []
    current: list[np.ndarray] = []
    d, s = share.v.shape[0], share.scales
    for msg in recorded.received:
        if isinstance(msg, SecureForwardIns) and not msg.train:
            current.append(np.asarray(msg.users))
            continue
        if current:
            evals.append(np.concatenate(current))
            current = []
        if isinstance(msg, SecureForwardIns):
            steps.append(np.asarray(msg.users))
        elif isinstance(msg, SecureBackwardIns):
            vec = share.own.load(msg.enc_db, rows=len(steps[-1]), length=d, what="[[dL/db]]")
            grads.append(
                dequantise(
                    share.own.decrypt(vec, d), s.db_bits, bound_bits=s.value_bits, what="dL/db"
                )
            )
    if current:
        evals.append(np.concatenate(current))
    return PassiveView(step_users=steps, step_grads=grads, eval_users=evals)


def _plaintext(prep: Prepared, privacy: PrivacyConfig | None) -> Prepared:
    """``prep`` in the protocol's plaintext mode (a local replay: both sides allow it)."""
    train = prep.job.train.model_copy(update={"protocol": Mode.PLAINTEXT})
    update = {"train": train} if privacy is None else {"train": train, "privacy": privacy}
    return dataclasses.replace(
        prep, job=prep.job.model_copy(update=update), allow_plaintext=(True, True)
    )


def audit_split(prep: Prepared, *, epochs: int, privacy: PrivacyConfig | None = None) -> AuditRun:
    """Train the split network for ``epochs`` with ``privacy`` (the job's by default)."""
    prep = _plaintext(prep, privacy)
    e_end, p_end = InMemoryChannel.pair("active", "passive")
    recorded = RecordingChannel(p_end)
    job_id = prep.job.job.name
    server = secure_server(prep, Endpoint(recorded, job_id=job_id, timeout=120.0))
    model = secure_model(prep, Endpoint(e_end, job_id=job_id, timeout=120.0))
    truth = _TruthRecorder(model)
    model.observer = truth
    thread = threading.Thread(target=server.serve, name="passive", daemon=True)
    thread.start()
    try:
        model.peer.setup()
        result = _fit(prep, model, None, epochs)
        z_b = model.z_b_latest()
    finally:
        model.peer.shutdown(step=-1)
        thread.join(timeout=120.0)
        model.peer.share.close()
        server.share.close()
    activity = np.array([len(r) for r in _user_rows(prep)], dtype=np.int64)
    active = ActiveTruth(
        n_users=len(prep.alignment),
        activity=activity,
        residual=truth.residual,
        flip_norm=truth.flip_norm,
        noise_std=truth.noise_std,
    )
    spe = -(-len(prep.alignment) // prep.job.train.users_per_step)
    view = passive_view(recorded, server.share)
    return AuditRun(label_attacks(view, active, spe), result, z_b, spe)


def _user_rows(prep: Prepared) -> list[np.ndarray]:
    rows = prep.split.user_rows()
    empty = np.empty(0, dtype=np.int64)
    return [rows.get(u, empty) for u in range(prep.split.n_users)]


def _run_summary(run: AuditRun) -> dict[str, Any]:
    best = run.fit.best
    return {
        **run.attacks.worst(),
        "test_auc": round(best.test.auc, 4),
        f"test_hr@{best.test.k}": round(best.test.hr, 4),
        "audit": dataclasses.asdict(run.attacks.audit),
        "stages": {
            "activity": [dataclasses.asdict(f) for f in run.attacks.activity],
            "direction": [dataclasses.asdict(f) for f in run.attacks.direction],
            "counterfactual": [dataclasses.asdict(f) for f in run.attacks.counterfactual_auc],
        },
    }


def audit_summary(
    privacy: PrivacyConfig, as_run: AuditRun, undefended: AuditRun, epochs: int
) -> dict[str, Any]:
    """The JSON-ready ``privacy`` entry of a pilot's results."""
    return {
        "label_noise": privacy.label_noise,
        "label_clip": privacy.label_clip,
        "epsilon_per_user": round(label_epsilon(privacy.label_noise, epochs), 1),
        "epochs": epochs,
        "as_run": _run_summary(as_run),
        "no_defence": _run_summary(undefended),
    }
