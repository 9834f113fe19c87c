"""E's process: drives PSI, training over the encrypted protocol, and evaluation."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfl.checkpoint import Checkpoint, CheckpointStore
from vfl.config.party import PartyConfig
from vfl.config.plan import JobPlan
from vfl.data.loading import load_party_data
from vfl.data.splits import RecSplit, build_split
from vfl.data.tables import ActiveData
from vfl.executor import PartyExecutor
from vfl.party.accounting import MeteredModel, PhaseMeter
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
from vfl.party.partners import Partner, PartnerLink, UserScope, UserUniverse, partner_groups
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
from vfl.phases import Phase
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.options import SecurityFloor
from vfl.protocol.secure_split import SecurePassivePeer
from vfl.storage import atomic_write_json
from vfl.training.defences import label_defence
from vfl.training.inputs import TableTensors, UserBatcher
from vfl.training.loop import FitResult, LoopState, ProgressFn, StopRule, fit
from vfl.training.recommenders import ActiveInputs
from vfl.training.secure import (
    FederatedRecommender,
    LayerParty,
    PartnerPeer,
    active_share,
    layer_settings,
)
from vfl.training.summary import summarise


def run_active(
    cfg: PartyConfig,
    plan: JobPlan,
    links: Sequence[PartnerLink],
    out_dir: Path,
    *,
    epochs: int | None = None,
    timeout: float = 120.0,
    progress: ProgressFn | None = None,
    phase: PhaseFn = no_phase,
    local_seed: int | None = None,
    meter: PhaseMeter | None = None,
    store: CheckpointStore | None = None,
    resume_at: Position | None = None,
) -> dict[str, Any]:
    """PSI with each partner of ``links`` in turn, encrypted split training with all of them
    and evaluation at E; writes ``metrics.json``.

    ``meter`` records the cost of each phase (written into ``metrics.json`` as ``phases``);
    each link's ``export`` writes and exchanges E's shard for that partner once the partners
    have stopped serving. With a ``store``, every step of training is checkpointed (each
    link's own store holds its alignment), and a run resumes training from the position
    ``resume_at`` all partners agreed (:mod:`vfl.party.resume`).
    """
    meter = meter if meter is not None else PhaseMeter()
    data = load_party_data(cfg)
    if not isinstance(data, ActiveData):
        raise TypeError("run_active needs an active party config")
    with party_executor(cfg) as executor:
        meter.enter(Phase.PSI)  # PSI and persisting its alignment (vfl.psi.store)
        aligned = [
            align_or_resume(
                link.channel,
                cfg,
                data.users,
                plan,
                link.work_dir,
                timeout=timeout,
                phase=phase,
                store=link.store,
                resume_at=link.resume_at,
                executor=executor,
            )
            for link in links
        ]
        meter.enter(Phase.ALIGNMENT)
        partners = [
            Partner(name=link.name, channel=link.channel, alignment=in_id_order(local))
            for link, local in zip(links, aligned, strict=True)
        ]
        phase(Phase.TRAIN)
        metrics = train_active(
            data,
            plan,
            partners,
            out_dir,
            epochs=epochs,
            timeout=timeout,
            progress=progress,
            local_seed=local_seed,
            meter=meter,
            exports=[_exporting(k.export, phase, meter) for k in links if k.export is not None],
            allow_plaintext=cfg.party.allow_plaintext,
            party=cfg.party.name,
            floor=cfg.party.floor(),
            store=store,
            start=None if store is None else training_checkpoint(store, resume_at),
            executor=executor,
        )
    meter.close()
    metrics["phases"] = meter.records
    n_known = metrics["aligned_users"] if len(partners) > 1 else len(aligned[0])
    metrics["psi"] = {
        **psi_statistics(meter.records, len(data.users), n_known),
        "reused": all(local.reused for local in aligned),
    }
    if len(partners) > 1:
        metrics["psi"]["partners"] = {p.name: len(p.alignment) for p in partners}
    atomic_write_json(out_dir / "metrics.json", metrics, private=True)  # E's own results
    return metrics


def _exporting(export: ShardExporter, phase: PhaseFn, meter: PhaseMeter) -> ShardExporter:
    """``export`` under the sealed phase ``export`` (metered)."""

    def starting() -> None:
        phase(Phase.EXPORT)
        meter.enter(Phase.EXPORT)

    return replace(export, starting=starting)


def psi_statistics(records: list[dict[str, Any]], n_local: int, n_common: int) -> dict[str, Any]:
    """E's PSI figures: its set size, the intersection, and the PSI phase's time and bytes.

    Duplicate or empty ids never reach this point: PSI refuses them with a ``DataError``
    naming the ids (SPEC §4), so a finished run reports zero of each.
    """
    psi = next((r for r in records if r["phase"] == Phase.PSI), {})
    return {
        "e_ids": n_local,
        "intersection": n_common,
        "duplicates": 0,
        "empty_ids": 0,
        "seconds": psi.get("seconds"),
        "bytes_sent": psi.get("bytes_sent"),
        "bytes_received": psi.get("bytes_received"),
    }


def train_active(
    data: ActiveData,
    plan: JobPlan,
    partners: Sequence[Partner],
    out_dir: Path,
    *,
    scope: UserScope = UserScope.ALL,
    epochs: int | None = None,
    timeout: float = 120.0,
    progress: ProgressFn | None = None,
    local_seed: int | None = None,
    meter: PhaseMeter | None = None,
    exports: Sequence[ShardExporter] = (),
    allow_plaintext: bool = False,
    party: str = "E",
    floor: SecurityFloor = SecurityFloor(),
    store: CheckpointStore | None = None,
    start: Checkpoint | None = None,
    executor: PartyExecutor | None = None,
) -> dict[str, Any]:
    """Encrypted split training and evaluation at E with every partner in ``partners``.

    Each partner has its own secure-layer pair (E's key pair, shares of ``W_Bk``) over its
    own channel, and is asked only about the users its alignment holds. ``scope`` says
    whether E's users that no partner knows train too (``ALL``, through ``a_k``).
    ``allow_plaintext`` is E's own ``[party] allow_plaintext`` (plaintext mode needs both);
    ``floor`` is E's own security floor, checked before E's key pairs are generated.
    ``executor``: where E's Paillier batches run (default: the plan's local pools).
    ``start``: a ``train`` checkpoint to continue from; ``store``: where to save each step.
    ``exports``: E's shard for each partner, exchanged with it once every partner stopped.

    Raises:
        ValueError: no partner, or two partners of one name.
    """
    names = [p.name for p in partners]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"E needs one or more passive parties of distinct names, got {names}")
    meter = meter if meter is not None else PhaseMeter()
    meter.enter("setup")  # split, model, key pairs and the protocol's setup exchanges
    everyone = LocalAlignment(ids=data.users.ids, rows=np.arange(len(data.users), dtype=np.int64))
    users = UserUniverse.of(everyone, [p.alignment for p in partners], scope)
    split = build_split(
        data.interactions,
        users.alignment(),
        data.items,
        n_negatives=plan.eval.test_negatives,
        seed=plan.job.seed,
    )
    secret = _secrets(local_seed, len(partners))
    peers = [
        PartnerPeer(
            name=p.name,
            peer=_passive_peer(
                plan,
                p.channel,
                timeout,
                secret.rotation[k],
                (allow_plaintext, party, floor),
                fresh=start is None,
                executor=executor,
            ),
            positions=users.positions[k],
        )
        for k, p in enumerate(partners)
    ]
    model = _model(data, plan, users, peers, (secret.model, split))
    try:
        for p in peers:
            p.peer.setup()
        result = _fit(
            model, split, plan, (epochs, progress, meter), store, start, secret.sample, users
        )
        metrics = {
            "job": plan.job.name,
            "aligned_users": int(np.count_nonzero(np.any(np.stack(users.positions) >= 0, 0))),
            "users": len(users),
            "partners": {p.name: {"aligned_users": p.n_known} for p in peers},
            "test_users": len(split.test.users),
            "key_bits": plan.train.key_bits,
            "split_encrypted": summarise(result),
        }
        files = {x.identity.peer: x.active_files(model) for x in exports}
        if store is not None:
            save_active_final(store, model, metrics, files)
        for p in peers:  # only once all is saved: P stops serving when it reads this
            p.peer.shutdown(step=-1)
    finally:
        for p in peers:
            p.peer.share.close()
    for x in exports:
        x.exchange(files[x.identity.peer])
    write_metrics(out_dir, metrics)
    return metrics


@dataclass(frozen=True)
class _Secrets:
    """E's secret seeds, drawn from its local seed: each partner's rotation of ``W_Bk(0)``,
    the model's initial weights, the negatives and defence noise. The first three words are
    those of the one-partner job, so a one-partner run is unchanged."""

    rotation: tuple[int, ...]
    model: int
    sample: int


def _secrets(local_seed: int | None, n_partners: int) -> _Secrets:
    words = np.random.SeedSequence(local_rng_seed(local_seed)).generate_state(
        2 + n_partners, np.uint64
    )
    rotation = (int(words[0]), *(int(w) for w in words[3:]))
    return _Secrets(rotation=rotation, model=int(words[1]), sample=int(words[2]))


def _fit(
    model: FederatedRecommender,
    split: RecSplit,
    plan: JobPlan,
    run: tuple[int | None, ProgressFn | None, PhaseMeter],
    store: CheckpointStore | None,
    start: Checkpoint | None,
    sample_seed: int,
    users: UserUniverse,
) -> FitResult:
    """The training loop (``run``: epochs, progress, meter), from ``start`` if given,
    checkpointing into ``store`` if given. The user order comes from the job seed; the
    negatives and the defence's noise from ``sample_seed``, E's own secret. Test metrics are
    also reported per group of ``users`` (:func:`~vfl.party.partners.partner_groups`)."""
    epochs, progress, meter = run
    t = plan.train
    batcher = UserBatcher(
        split,
        users_per_step=t.users_per_step,
        negatives_per_positive=t.negatives_per_positive,
        order_seed=plan.job.seed,
    )
    return fit(
        MeteredModel(model, meter, steps_per_epoch=batcher.steps_per_epoch(), emit=_stderr_line),
        split,
        batcher,
        stop=StopRule.of(t, epochs=epochs),
        seed=sample_seed,
        k=plan.eval.k,
        cold_quantile=plan.eval.cold_start_quantile,
        progress=progress,
        start=None if start is None else restore_active(start, model),
        on_step=None if store is None else lambda s: save_active_step(store, model, s),
        groups=partner_groups(users),
    )


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    """E's ``metrics.json`` (atomically)."""
    atomic_write_json(out_dir / "metrics.json", metrics, private=True)  # E's own results


def save_active_step(store: CheckpointStore, model: FederatedRecommender, state: LoopState) -> None:
    """``train`` checkpoint after a step or an epoch's evaluation: head (with the ``a_k``),
    Adam, each partner's ``U_k`` and its momentum share, the loop state."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"loop": state.to_meta()}
    for p in model.partners:
        key = _share_key(p.name)
        sgd_arrays, sgd_meta = sgd_state(key, p.peer.share.sgd)
        arrays |= {key: p.peer.share.u, **sgd_arrays}
        meta |= sgd_meta
    store.save(
        Phase.TRAIN,
        state.step,
        seq=_next_out(model.partners[0]),
        meta=meta | {"seqs": {p.name: _next_out(p) for p in model.partners}},
        arrays=arrays,
        blobs=module_blobs("head", model.head, model.optimizer),
    )


def _share_key(partner: str) -> str:
    """The checkpoint array of E's share ``U_k`` of partner ``partner``."""
    return f"u.{partner}"


def _next_out(partner: PartnerPeer) -> int:
    """The sealed channel's next message number to this partner (0 in-process)."""
    return int(getattr(partner.peer.endpoint.channel, "next_out", 0))


def restore_active(ckpt: Checkpoint, model: FederatedRecommender) -> LoopState:
    """Load E's state from a ``train`` checkpoint; return the loop state to continue from."""
    restore_modules(ckpt, "head", model.head, model.optimizer)
    for p in model.partners:
        key = _share_key(p.name)
        p.peer.share.u = ckpt.arrays[key]
        restore_sgd(ckpt, key, p.peer.share.sgd)
    return LoopState.from_meta(ckpt.meta["loop"])


def save_active_final(
    store: CheckpointStore,
    model: FederatedRecommender,
    metrics: dict[str, Any],
    files: dict[str, dict[str, bytes]],
) -> None:
    """``eval`` 0 (the metrics) and ``export`` 0 (E's trained head and each ``U_k``, and the
    bytes of its shard files for each partner, :mod:`vfl.party.exporting`)."""
    shards = {k: v for peer, f in files.items() for k, v in shard_blobs(f, peer).items()}
    store.save(Phase.EVAL, 0, meta={"metrics": metrics})
    store.save(
        Phase.EXPORT,
        0,
        arrays={_share_key(p.name): p.peer.share.u for p in model.partners},
        blobs={"head": torch_blob(model.head.state_dict()), **shards},
    )


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _passive_peer(
    plan: JobPlan,
    channel: ByteChannel,
    timeout: float,
    seed: int,
    permission: tuple[bool, str, SecurityFloor],
    *,
    fresh: bool,
    executor: PartyExecutor | None = None,
) -> SecurePassivePeer:
    """E's proxy of a partner, with E's key pair for it and, for a ``fresh`` job, its
    rotation of that partner's ``W_B(0)``.

    The rotation comes from ``seed``, drawn from E's own secret, not the job seed P knows
    too. A resumed run makes no initial shares: ``U`` is restored from its checkpoint.
    """
    allow_plaintext, party, floor = permission
    share = active_share(
        plan.model,
        layer_settings(plan.train, privacy=plan.privacy),
        LayerParty(party, allow_plaintext, floor),
        rotation_seed=seed if fresh else None,
        executor=executor,
    )
    return SecurePassivePeer(SteppedEndpoint(channel, job_id=plan.job.name, timeout=timeout), share)


def _model(
    data: ActiveData,
    plan: JobPlan,
    users: UserUniverse,
    partners: Sequence[PartnerPeer],
    init: tuple[int, RecSplit],
) -> FederatedRecommender:
    """E's towers, top model and ``a_k``, initialised from ``init``'s seed (E's secret, not
    the job seed) over the histories of ``init``'s split, with the plan's label defence."""
    seed, split = init
    inputs = ActiveInputs(
        users=TableTensors.from_table(data.users, users.rows),
        items=TableTensors.from_table(data.items),
        sequences=(split.train_users, split.train_items),
        kind=data.kind,
    )
    m, t = plan.model, plan.train
    with TORCH_INIT_LOCK:
        torch.manual_seed(seed)
        return FederatedRecommender(
            inputs,
            m,
            t,
            partners=partners,
            n_users=len(users),
            defence=label_defence(plan.privacy),
        )
