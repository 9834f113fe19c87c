"""P's process: payment features in, ``b`` and its share of ``W_B`` trained, nothing else out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from vfl.checkpoint import Checkpoint, CheckpointStore
from vfl.config.party import PartyConfig
from vfl.config.plan import JobPlan
from vfl.data.loading import load_party_data
from vfl.data.tables import PassiveData
from vfl.executor import PartyExecutor
from vfl.kinds import BottomInputs, load_kind
from vfl.party.common import (
    TORCH_INIT_LOCK,
    LocalAlignment,
    PhaseFn,
    SteppedEndpoint,
    in_id_order,
    local_rng_seed,
    no_phase,
    party_executor,
)
from vfl.party.exporting import ShardExporter, shard_blobs
from vfl.party.resume import (
    Position,
    align_or_resume,
    module_blobs,
    restore_modules,
    restore_sgd,
    sgd_state,
    training_checkpoint,
)
from vfl.phases import Phase
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.options import SecurityFloor
from vfl.protocol.secure_split import PassiveSecureServer
from vfl.storage import atomic_write_json
from vfl.training.inputs import TableTensors
from vfl.training.recommenders import passive_optimizer
from vfl.training.secure import LayerParty, layer_settings, passive_share


def run_passive(
    cfg: PartyConfig,
    plan: JobPlan,
    channel: ByteChannel,
    out_dir: Path,
    *,
    timeout: float = 120.0,
    phase: PhaseFn = no_phase,
    local_seed: int | None = None,
    export: ShardExporter | None = None,
    store: CheckpointStore | None = None,
    resume_at: Position | None = None,
) -> dict[str, int]:
    """Load P's data, align with E by PSI, then serve the encrypted protocol until E is done.

    ``export`` writes and exchanges P's trained shard after E's ``Shutdown``, in phase
    ``export``.
    With a ``store``, every phase and step is checkpointed, and a run resumes from the agreed
    position ``resume_at`` (:mod:`vfl.party.resume`).
    """
    data = load_party_data(cfg)
    if not isinstance(data, PassiveData):
        raise TypeError("run_passive needs a passive party config")
    with party_executor(cfg) as executor:
        alignment = align_or_resume(
            channel,
            cfg,
            data.users,
            plan,
            out_dir,
            timeout=timeout,
            phase=phase,
            store=store,
            resume_at=resume_at,
            executor=executor,
        )
        alignment = in_id_order(alignment)
        atomic_write_json(
            out_dir / "psi.json",
            {"p_ids": len(data.users), "intersection": len(alignment)},
            private=True,
        )
        phase(Phase.TRAIN)
        start = None if store is None else training_checkpoint(store, resume_at)
        return serve_passive(
            data,
            plan,
            channel,
            alignment,
            timeout=timeout,
            local_seed=local_seed,
            export=(
                None if export is None else replace(export, starting=lambda: phase(Phase.EXPORT))
            ),
            allow_plaintext=cfg.party.allow_plaintext,
            party=cfg.party.name,
            floor=cfg.party.floor(),
            store=store,
            start=start,
            executor=executor,
        )


def serve_passive(
    data: PassiveData,
    plan: JobPlan,
    channel: ByteChannel,
    alignment: LocalAlignment,
    *,
    timeout: float = 120.0,
    local_seed: int | None = None,
    export: ShardExporter | None = None,
    allow_plaintext: bool = False,
    party: str = "P",
    floor: SecurityFloor = SecurityFloor(),
    store: CheckpointStore | None = None,
    start: Checkpoint | None = None,
    executor: PartyExecutor | None = None,
) -> dict[str, int]:
    """Serve the encrypted protocol on an agreed alignment until E sends ``Shutdown``.

    ``executor``: where P's Paillier batches run (default: the plan's local pools).

    ``allow_plaintext`` is P's own ``[party] allow_plaintext`` (plaintext mode needs both);
    ``floor`` is P's own security floor, checked before P's key pair is generated.

    P's bottom model and its factor ``G`` of ``W_B(0)`` are drawn from P's own secret seed
    (``local_seed``, fresh from the OS when None), never from the job seed E knows.
    ``start``: a ``train`` checkpoint to continue from; ``store``: where to save each step.
    """
    alignment = in_id_order(alignment)  # the training order at both parties (idempotent)
    features = TableTensors.from_table(data.users, alignment.rows)
    m, t = plan.model, plan.train
    seed = local_rng_seed(local_seed)
    with TORCH_INIT_LOCK:
        torch.manual_seed(seed % 2**32)
        bottom = load_kind(data.kind).bottom(BottomInputs(features), m)
    share = passive_share(
        m,
        layer_settings(t, privacy=plan.privacy),
        LayerParty(party, allow_plaintext, floor),
        factor_seed=seed + 1 if start is None else None,
        noise_seed=seed + 2,  # P's own secret stream, like its bottom model and V
        executor=executor,
    )
    server = PassiveSecureServer(
        endpoint=SteppedEndpoint(channel, job_id=plan.job.name, timeout=timeout),
        bottom=bottom,
        numeric=features.numeric,
        categorical=features.categorical,
        share=share,
        optimizer=passive_optimizer(bottom, t),
    )
    try:
        files = _serve(server, store, start, export)
    finally:
        share.close()
    if export is not None:
        export.exchange(files)
    return {"aligned_users": len(alignment), "steps": server.steps_done}


def _serve(
    server: PassiveSecureServer,
    store: CheckpointStore | None,
    start: Checkpoint | None,
    export: ShardExporter | None,
) -> dict[str, bytes]:
    """Serve from ``start`` if given, saving each step into ``store``, then the final state
    with the shard's file bytes (``export`` 0); returns those bytes."""
    if start is not None:
        restore_passive(start, server)
    if store is not None:
        server.on_update = lambda step: save_passive_step(store, server, Phase.TRAIN, step)
    server.serve()
    files = {} if export is None else export.passive_files(server)
    if store is not None:
        blobs = {} if export is None else shard_blobs(files, export.identity.peer)
        save_passive_step(store, server, Phase.EXPORT, 0, blobs)
    return files


def save_passive_step(
    store: CheckpointStore,
    server: PassiveSecureServer,
    phase: Phase,
    step: int,
    extra: dict[str, bytes] | None = None,
) -> None:
    """P's bottom model, Adam state, ``V``, its momentum share and step count (``train`` s,
    or ``export`` 0 with the shard's files in ``extra``)."""
    arrays, meta = sgd_state("v", server.share.sgd)
    store.save(
        phase,
        step,
        seq=int(getattr(server.endpoint.channel, "next_out", 0)),
        meta={"steps_done": server.steps_done, **meta},
        arrays={"v": server.share.v, **arrays},
        blobs={**module_blobs("bottom", server.bottom, server.optimizer), **(extra or {})},
    )


def restore_passive(ckpt: Checkpoint, server: PassiveSecureServer) -> None:
    """Load P's state from a ``train`` checkpoint."""
    restore_modules(ckpt, "bottom", server.bottom, server.optimizer)
    server.share.v = ckpt.arrays["v"]
    restore_sgd(ckpt, "v", server.share.sgd)
    server.steps_done = int(ckpt.meta["steps_done"])


def finished_summary(store: CheckpointStore) -> dict[str, int]:
    """P's summary from its ``export`` checkpoint (a restart after the job ended)."""
    steps = int(store.load(Phase.EXPORT, 0).meta["steps_done"])
    return {"aligned_users": len(store.load(Phase.ALIGNMENT, 0).arrays["ids"]), "steps": steps}
