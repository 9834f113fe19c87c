"""P's process: payment features in, ``b`` and its share of ``W_B`` trained, nothing else out."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import torch

from vfl.config.job import JobConfig
from vfl.config.party import PartyConfig
from vfl.data.loading import load_party_data
from vfl.data.tables import PassiveData
from vfl.models.bottom import PassiveBottom
from vfl.party.common import align_with_peer, save_alignment
from vfl.protocol.endpoint import ByteChannel, Endpoint
from vfl.protocol.secure_layer import PassiveShare, generate_keys, initial_half
from vfl.protocol.secure_split import PassiveSecureServer
from vfl.training.inputs import TableTensors
from vfl.training.secure import layer_settings


def run_passive(
    cfg: PartyConfig, job: JobConfig, channel: ByteChannel, out_dir: Path, *, timeout: float = 120.0
) -> dict[str, int]:
    """Load P's data, align with E by PSI, then serve the encrypted protocol until E is done."""
    data = load_party_data(cfg)
    if not isinstance(data, PassiveData):
        raise TypeError("run_passive needs a passive party config")
    alignment = align_with_peer(channel, cfg, data.users, job_id=job.job.name, timeout=timeout)
    save_alignment(alignment, out_dir)
    features = TableTensors.from_table(data.users, alignment.rows)
    m, t = job.model, job.train
    torch.manual_seed(secrets.randbits(32))  # P's initialisation is P's own secret
    bottom = PassiveBottom(
        features.n_numeric, features.cardinalities, m.passive_hidden, m.passive_out
    )
    settings = layer_settings(t)
    share = PassiveShare(
        v=initial_half(
            m.passive_out,
            m.interactive_out,
            settings.scales,
            np.random.default_rng(secrets.randbits(64)),
        ),
        settings=settings,
        keys=generate_keys(settings),
        allow_plaintext=cfg.party.allow_plaintext,
        party=cfg.party.name,
    )
    server = PassiveSecureServer(
        endpoint=Endpoint(channel, job_id=job.job.name, timeout=timeout),
        bottom=bottom,
        numeric=features.numeric,
        categorical=features.categorical,
        share=share,
        optimizer=torch.optim.Adam(
            bottom.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay
        ),
    )
    try:
        server.serve()
    finally:
        share.close()
    return {"aligned_users": len(alignment), "steps": server.steps_done}
