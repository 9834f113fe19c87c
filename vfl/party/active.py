"""E's process: drives PSI, training over the encrypted protocol, and evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfl.config.party import PartyConfig
from vfl.config.plan import JobPlan
from vfl.data.alignment import Alignment
from vfl.data.loading import load_party_data
from vfl.data.splits import build_split
from vfl.data.tables import ActiveData
from vfl.party.common import (
    TORCH_INIT_LOCK,
    LocalAlignment,
    PhaseFn,
    SteppedEndpoint,
    align_with_peer,
    local_rng_seed,
    no_phase,
)
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.secure_layer import ActiveShare, generate_keys, initial_half
from vfl.protocol.secure_split import SecurePassivePeer
from vfl.training.compare import summarise
from vfl.training.inputs import TableTensors, UserBatcher
from vfl.training.loop import ProgressFn, fit
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
) -> dict[str, Any]:
    """PSI, encrypted split training and evaluation at E; writes ``metrics.json``."""
    data = load_party_data(cfg)
    if not isinstance(data, ActiveData):
        raise TypeError("run_active needs an active party config")
    phase("psi")
    local = align_with_peer(
        channel,
        cfg,
        data.users,
        job_id=plan.job.name,
        timeout=timeout,
        work_dir=out_dir,
        psi=plan.psi,
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
) -> dict[str, Any]:
    """Encrypted split training and evaluation at E on an agreed alignment.

    ``allow_plaintext`` is E's own ``[party] allow_plaintext`` (plaintext mode needs both).
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
    t = plan.train
    batcher = UserBatcher(
        split, users_per_step=t.users_per_step, negatives_per_positive=t.negatives_per_positive
    )
    try:
        peer.setup()
        result = fit(
            model,
            split,
            batcher,
            epochs=epochs or t.epochs,
            seed=plan.job.seed,
            k=plan.eval.k,
            cold_quantile=plan.eval.cold_start_quantile,
            progress=progress,
        )
    finally:
        peer.shutdown(step=-1)
        peer.share.close()
    metrics = {
        "job": plan.job.name,
        "aligned_users": len(alignment),
        "test_users": len(split.test.users),
        "key_bits": t.key_bits,
        "split_encrypted": summarise(result),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


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
