"""P's process: payment features in, ``b`` and its share of ``W_B`` trained, nothing else out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vfl.config.party import PartyConfig
from vfl.config.plan import JobPlan
from vfl.data.loading import load_party_data
from vfl.data.tables import PassiveData
from vfl.models.bottom import PassiveBottom
from vfl.party.common import (
    TORCH_INIT_LOCK,
    LocalAlignment,
    PhaseFn,
    SteppedEndpoint,
    align_with_peer,
    in_id_order,
    local_rng_seed,
    no_phase,
)
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.secure_layer import PassiveShare, generate_keys, initial_half
from vfl.protocol.secure_split import PassiveSecureServer
from vfl.storage import atomic_write_json
from vfl.training.inputs import TableTensors
from vfl.training.secure import layer_settings


def run_passive(
    cfg: PartyConfig,
    plan: JobPlan,
    channel: ByteChannel,
    out_dir: Path,
    *,
    timeout: float = 120.0,
    phase: PhaseFn = no_phase,
    local_seed: int | None = None,
    export: PassiveExportFn | None = None,
) -> dict[str, int]:
    """Load P's data, align with E by PSI, then serve the encrypted protocol until E is done.

    ``export`` is called with P's trained server after E's ``Shutdown``, in phase ``export``.
    """
    data = load_party_data(cfg)
    if not isinstance(data, PassiveData):
        raise TypeError("run_passive needs a passive party config")
    phase("psi")
    alignment = align_with_peer(
        channel,
        cfg,
        data.users,
        job_id=plan.job.name,
        timeout=timeout,
        work_dir=out_dir,
        psi=plan.psi,
    )
    alignment = in_id_order(alignment)
    atomic_write_json(
        out_dir / "psi.json", {"p_ids": len(data.users), "intersection": len(alignment)}
    )
    phase("train")

    def exporting(server: PassiveSecureServer) -> None:
        phase("export")
        if export is not None:
            export(server)

    return serve_passive(
        data,
        plan,
        channel,
        alignment,
        timeout=timeout,
        local_seed=local_seed,
        export=None if export is None else exporting,
        allow_plaintext=cfg.party.allow_plaintext,
        party=cfg.party.name,
    )


PassiveExportFn = Callable[[PassiveSecureServer], None]


def serve_passive(
    data: PassiveData,
    plan: JobPlan,
    channel: ByteChannel,
    alignment: LocalAlignment,
    *,
    timeout: float = 120.0,
    local_seed: int | None = None,
    export: PassiveExportFn | None = None,
    allow_plaintext: bool = False,
    party: str = "P",
) -> dict[str, int]:
    """Serve the encrypted protocol on an agreed alignment until E sends ``Shutdown``.

    ``allow_plaintext`` is P's own ``[party] allow_plaintext`` (plaintext mode needs both).

    P's bottom model and its half of ``W_B`` are drawn from P's own secret seed
    (``local_seed``, fresh from the OS when None), never from the job seed E knows.
    """
    alignment = in_id_order(alignment)  # the training order at both parties (idempotent)
    features = TableTensors.from_table(data.users, alignment.rows)
    m, t = plan.model, plan.train
    seed = local_rng_seed(local_seed)
    with TORCH_INIT_LOCK:
        torch.manual_seed(seed % 2**32)
        bottom = PassiveBottom(
            features.n_numeric, features.cardinalities, m.passive_hidden, m.passive_out
        )
    settings = layer_settings(t)
    share = PassiveShare(
        v=initial_half(
            m.passive_out, m.interactive_out, settings.scales, np.random.default_rng(seed + 1)
        ),
        settings=settings,
        keys=generate_keys(settings),
        allow_plaintext=allow_plaintext,
        party=party,
    )
    server = PassiveSecureServer(
        endpoint=SteppedEndpoint(channel, job_id=plan.job.name, timeout=timeout),
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
    if export is not None:
        export(server)
    return {"aligned_users": len(alignment), "steps": server.steps_done}
