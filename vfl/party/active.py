"""E's process: drives PSI, training over the encrypted protocol, and evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfl.checkpoint import Checkpoint, CheckpointStore, Phase
from vfl.config.party import PartyConfig
from vfl.config.plan import JobPlan
from vfl.data.alignment import Alignment
from vfl.data.loading import load_party_data
from vfl.data.splits import RecSplit, build_split
from vfl.data.tables import ActiveData
from vfl.party.common import (
    TORCH_INIT_LOCK,
    LocalAlignment,
    PhaseFn,
    SteppedEndpoint,
    local_rng_seed,
    no_phase,
)
from vfl.party.resume import (
    Position,
    align_or_resume,
    module_blobs,
    restore_modules,
    restore_sgd,
    sgd_state,
    torch_blob,
    training_checkpoint,
)
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.secure_layer import ActiveShare, generate_keys, initial_half
from vfl.protocol.secure_split import SecurePassivePeer
from vfl.storage import atomic_write_bytes
from vfl.training.compare import summarise
from vfl.training.inputs import TableTensors, UserBatcher
from vfl.training.loop import FitResult, LoopState, ProgressFn, fit
from vfl.training.recommenders import ActiveInputs
from vfl.training.secure import SecureSplitRecommender, layer_settings


def run_active(
    cfg: PartyConfig,
    plan: JobPlan,
    channel: ByteChannel,
    out_dir: Path,
    *,
    epochs: int | None = None,
    timeout: float = 120.0,
    progress: ProgressFn | None = None,
    phase: PhaseFn = no_phase,
    local_seed: int | None = None,
    store: CheckpointStore | None = None,
    resume_at: Position | None = None,
) -> dict[str, Any]:
    """PSI, encrypted split training and evaluation at E; writes ``metrics.json``.

    With a ``store``, every phase and step is checkpointed, and a run resumes from the agreed
    position ``resume_at`` (:mod:`vfl.party.resume`).
    """
    data = load_party_data(cfg)
    if not isinstance(data, ActiveData):
        raise TypeError("run_active needs an active party config")
    local = align_or_resume(
        channel,
        cfg,
        data.users,
        plan,
        out_dir,
        timeout=timeout,
        phase=phase,
        store=store,
        resume_at=resume_at,
    )
    phase("train")
    return train_active(
        data,
        plan,
        channel,
        local,
        out_dir,
        epochs=epochs,
        timeout=timeout,
        progress=progress,
        local_seed=local_seed,
        allow_plaintext=cfg.party.allow_plaintext,
        party=cfg.party.name,
        store=store,
        start=None if store is None else training_checkpoint(store, resume_at),
    )


def train_active(
    data: ActiveData,
    plan: JobPlan,
    channel: ByteChannel,
    local: LocalAlignment,
    out_dir: Path,
    *,
    epochs: int | None = None,
    timeout: float = 120.0,
    progress: ProgressFn | None = None,
    local_seed: int | None = None,
    allow_plaintext: bool = False,
    party: str = "E",
    store: CheckpointStore | None = None,
    start: Checkpoint | None = None,
) -> dict[str, Any]:
    """Encrypted split training and evaluation at E on an agreed alignment.

    ``allow_plaintext`` is E's own ``[party] allow_plaintext`` (plaintext mode needs both).
    ``start``: a ``train`` checkpoint to continue from; ``store``: where to save each step.
    """
    # E knows only its own rows; the passive party's rows stay at P.
    alignment = Alignment(
        ids=local.ids, active_rows=local.rows, passive_rows=np.full(len(local), -1, dtype=np.int64)
    )
    split = build_split(
        data.interactions,
        alignment,
        data.items,
        n_negatives=plan.eval.test_negatives,
        seed=plan.job.seed,
    )
    peer = _passive_peer(plan, channel, timeout, local_seed, (allow_plaintext, party))
    model = _model(data, plan, local, peer)
    try:
        peer.setup()
        result = _fit(model, split, plan, epochs, progress, store, start)
        metrics = {
            "job": plan.job.name,
            "aligned_users": len(alignment),
            "test_users": len(split.test.users),
            "key_bits": plan.train.key_bits,
            "split_encrypted": summarise(result),
        }
        if store is not None:
            save_active_final(store, model, metrics)
        peer.shutdown(step=-1)  # only once all is saved: P stops serving when it reads this
    finally:
        peer.share.close()
    write_metrics(out_dir, metrics)
    return metrics


def _fit(
    model: SecureSplitRecommender,
    split: RecSplit,
    plan: JobPlan,
    epochs: int | None,
    progress: ProgressFn | None,
    store: CheckpointStore | None,
    start: Checkpoint | None,
) -> FitResult:
    """The training loop, from ``start`` if given, checkpointing into ``store`` if given."""
    t = plan.train
    batcher = UserBatcher(
        split, users_per_step=t.users_per_step, negatives_per_positive=t.negatives_per_positive
    )
    return fit(
        model,
        split,
        batcher,
        epochs=epochs or t.epochs,
        seed=plan.job.seed,
        k=plan.eval.k,
        cold_quantile=plan.eval.cold_start_quantile,
        progress=progress,
        start=None if start is None else restore_active(start, model),
        on_step=None if store is None else lambda s: save_active_step(store, model, s),
    )


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    """E's ``metrics.json`` (atomically)."""
    atomic_write_bytes(out_dir / "metrics.json", json.dumps(metrics, indent=2).encode())


def save_active_step(
    store: CheckpointStore, model: SecureSplitRecommender, state: LoopState
) -> None:
    """``train`` checkpoint after a step or an epoch's evaluation: head, Adam, ``U`` and its
    momentum share, the loop state."""
    share = model.peer.share
    arrays, meta = sgd_state("u", share.sgd)
    store.save(
        Phase.TRAIN,
        state.step,
        seq=int(getattr(model.peer.endpoint.channel, "next_out", 0)),
        meta={"loop": state.to_meta(), **meta},
        arrays={"u": share.u, **arrays},
        blobs=module_blobs("head", model.head, model.optimizer),
    )


def restore_active(ckpt: Checkpoint, model: SecureSplitRecommender) -> LoopState:
    """Load E's state from a ``train`` checkpoint; return the loop state to continue from."""
    restore_modules(ckpt, "head", model.head, model.optimizer)
    model.peer.share.u = ckpt.arrays["u"]
    restore_sgd(ckpt, "u", model.peer.share.sgd)
    return LoopState.from_meta(ckpt.meta["loop"])


def save_active_final(
    store: CheckpointStore, model: SecureSplitRecommender, metrics: dict[str, Any]
) -> None:
    """``eval`` 0 (the metrics) and ``export`` 0 (E's trained shard: head and ``U``)."""
    store.save(Phase.EVAL, 0, meta={"metrics": metrics})
    store.save(
        Phase.EXPORT,
        0,
        arrays={"u": model.peer.share.u},
        blobs={"head": torch_blob(model.head.state_dict())},
    )


def _passive_peer(
    plan: JobPlan,
    channel: ByteChannel,
    timeout: float,
    local_seed: int | None,
    permission: tuple[bool, str],
) -> SecurePassivePeer:
    """E's proxy of P, with E's key pair and its half of ``W_B``.

    The half comes from E's own secret seed, not the job seed, which P knows too.
    """
    m, settings = plan.model, layer_settings(plan.train)
    rng = np.random.default_rng(local_rng_seed(local_seed))
    half = initial_half(m.passive_out, m.interactive_out, settings.scales, rng)
    share = ActiveShare(
        u=half,
        settings=settings,
        keys=generate_keys(settings),
        allow_plaintext=permission[0],
        party=permission[1],
    )
    return SecurePassivePeer(SteppedEndpoint(channel, job_id=plan.job.name, timeout=timeout), share)


def _model(
    data: ActiveData, plan: JobPlan, local: LocalAlignment, peer: SecurePassivePeer
) -> SecureSplitRecommender:
    """E's towers and top model, initialised from the job seed."""
    inputs = ActiveInputs(
        users=TableTensors.from_table(data.users, local.rows),
        items=TableTensors.from_table(data.items),
    )
    m, t = plan.model, plan.train
    with TORCH_INIT_LOCK:
        torch.manual_seed(plan.job.seed)
        return SecureSplitRecommender(inputs, m, t, n_users=len(local), peer=peer)
