"""E's process: drives PSI, training over the encrypted protocol, and evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfl.config.job import JobConfig
from vfl.config.party import PartyConfig
from vfl.data.alignment import Alignment
from vfl.data.loading import load_party_data
from vfl.data.splits import build_split
from vfl.data.tables import ActiveData
from vfl.party.common import align_with_peer, save_alignment
from vfl.protocol.endpoint import ByteChannel, Endpoint
from vfl.protocol.secure_layer import ActiveShare, generate_keys, initial_half
from vfl.protocol.secure_split import SecurePassivePeer
from vfl.training.compare import summarise
from vfl.training.inputs import TableTensors, UserBatcher
from vfl.training.loop import ProgressFn, fit
from vfl.training.recommenders import ActiveInputs
from vfl.training.secure import SecureSplitRecommender, layer_settings


def run_active(
    cfg: PartyConfig,
    job: JobConfig,
    channel: ByteChannel,
    out_dir: Path,
    *,
    epochs: int | None = None,
    timeout: float = 120.0,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """PSI, encrypted split training and evaluation at E; writes ``metrics.json``."""
    data = load_party_data(cfg)
    if not isinstance(data, ActiveData):
        raise TypeError("run_active needs an active party config")
    local = align_with_peer(channel, cfg, data.users, job_id=job.job.name, timeout=timeout)
    save_alignment(local, out_dir)
    # E knows only its own rows; the passive party's rows stay at P.
    alignment = Alignment(
        ids=local.ids, active_rows=local.rows, passive_rows=np.full(len(local), -1, dtype=np.int64)
    )
    split = build_split(
        data.interactions,
        alignment,
        data.items,
        n_negatives=job.eval.test_negatives,
        seed=job.job.seed,
    )
    inputs = ActiveInputs(
        users=TableTensors.from_table(data.users, local.rows),
        items=TableTensors.from_table(data.items),
    )
    m, t = job.model, job.train
    torch.manual_seed(job.job.seed)
    settings = layer_settings(t)
    rng = np.random.default_rng(job.job.seed)
    share = ActiveShare(
        u=initial_half(m.passive_out, m.interactive_out, settings.scales, rng),
        settings=settings,
        keys=generate_keys(settings),
        allow_plaintext=cfg.party.allow_plaintext,
        party=cfg.party.name,
    )
    peer = SecurePassivePeer(Endpoint(channel, job_id=job.job.name, timeout=timeout), share)
    model = SecureSplitRecommender(inputs, m, t, n_users=len(alignment), peer=peer)
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
            seed=job.job.seed,
            k=job.eval.k,
            cold_quantile=job.eval.cold_start_quantile,
            progress=progress,
        )
    finally:
        peer.shutdown(step=-1)
        share.close()
    metrics = {
        "job": job.job.name,
        "aligned_users": len(alignment),
        "test_users": len(split.test.users),
        "key_bits": t.key_bits,
        "split_encrypted": summarise(result),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
