"""``vfl compare``: E alone, plaintext split and centralised, trained on the same split.

All three see the same aligned users, the same train/validation/test split, the same negative
sampling stream and the same seed; only what the model may look at differs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfl.config.job import JobConfig, load_job_config, load_job_parties
from vfl.data.alignment import Alignment, align_locally
from vfl.data.loading import load_party_data
from vfl.data.splits import RecSplit, build_split
from vfl.data.tables import ActiveData, FeatureTable, PassiveData
from vfl.errors import DataError
from vfl.evaluation.report import write_report
from vfl.executor import PartyExecutor
from vfl.kinds import BottomInputs, load_kind
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.options import SecurityFloor
from vfl.protocol.plain_split import PassivePeer, PassivePlainServer
from vfl.protocol.secure_layer import (
    check_floor,
)
from vfl.protocol.secure_split import PassiveSecureServer, SecurePassivePeer
from vfl.storage import atomic_write_json, ensure_dir
from vfl.training.defences import label_defence
from vfl.training.inputs import TableTensors, UserBatcher
from vfl.training.loop import E_ONLY, KNOWN_TO_ALL, FitResult, ProgressFn, StopRule, fit
from vfl.training.recommenders import (
    ActiveInputs,
    HeadRecommender,
    Recommender,
    SplitRecommender,
    joined_users,
    passive_optimizer,
)
from vfl.training.secure import (
    LayerParty,
    SecureSplitRecommender,
    active_share,
    layer_settings,
    passive_share,
)
from vfl.training.summary import seed_noise, summarise
from vfl.transport.channel import InMemoryChannel

MODELS = ("e_alone", "split_plaintext", "centralised")


@dataclass(frozen=True)
class Prepared:
    """Everything the three runs share."""

    job: JobConfig
    alignment: Alignment
    split: RecSplit
    active: ActiveInputs
    passive_users: TableTensors  # P's features in aligned order (P's side only)
    # every_user: E's whole user table, ``known[u]`` whether P knows user u (else all True)
    known: np.ndarray | None = None
    passive_kind: str = "payments"  # P's kind of organisation (vfl.kinds): its bottom model
    allow_plaintext: tuple[bool, bool] = (False, False)  # (E's config, P's config)
    # each party's own security floor, from its own config: (E's, P's)
    floors: tuple[SecurityFloor, SecurityFloor] = (SecurityFloor(), SecurityFloor())
    names: tuple[str, str] = ("E", "P")  # the parties' names, for error messages


def prepare(
    job_file: str | Path,
    order: np.ndarray | None = None,
    *,
    seed: int | None = None,
    every_user: bool = False,
) -> Prepared:
    """Load both parties, align them, and build the evaluation split.

    ``order`` (normalised ids, e.g. the alignment a federated run's PSI produced) fixes the
    order of the aligned users, so the baselines see the same positions and hence the same
    batches as that run; it must hold exactly the common users. ``seed`` replaces the job's
    ``[job] seed`` (candidates, batches, initial weights), for measuring run-to-run noise.
    ``every_user``: train and score all of E's users, as a federated run with every user in
    (:attr:`~vfl.party.partners.UserScope.ALL`): users in E's id order (position u = E's
    u-th user by id, the federated run's order), P's features zero with a ``p_known = 0``
    column for the users P does not know (the centralised model's counterpart of ``a_k``).

    Raises:
        DataError: ``order`` is not the intersection of the two parties' users.
    """
    job = load_job_config(job_file)
    if seed is not None:
        job = job.model_copy(update={"job": job.job.model_copy(update={"seed": seed})})
    active_cfg, passive_cfg = load_job_parties(job, job_file)
    e_data = load_party_data(active_cfg)
    p_data = load_party_data(passive_cfg)
    if not isinstance(e_data, ActiveData) or not isinstance(p_data, PassiveData):
        raise TypeError("party roles were checked when loading the job")
    alignment = align_locally(
        e_data.users.ids,
        p_data.users.ids,
        sources=(str(active_cfg.users.path), str(passive_cfg.users.path)),
    )
    if order is not None:
        alignment = reorder(alignment, order)
    known = None
    if every_user:
        alignment, known = _every_user(alignment, e_data.users.ids)
    split = build_split(
        e_data.interactions,
        alignment,
        e_data.items,
        n_negatives=job.eval.test_negatives,
        seed=job.job.seed,
    )
    return Prepared(
        job=job,
        alignment=alignment,
        split=split,
        active=ActiveInputs(
            users=TableTensors.from_table(e_data.users, alignment.active_rows),
            items=TableTensors.from_table(e_data.items),
            sequences=(split.train_users, split.train_items),
            kind=e_data.kind,
        ),
        passive_users=_passive_tensors(p_data.users, alignment.passive_rows, known),
        known=known,
        passive_kind=p_data.kind,
        allow_plaintext=(active_cfg.party.allow_plaintext, passive_cfg.party.allow_plaintext),
        floors=(
            active_cfg.party.floor(str(job.parties.active)),
            passive_cfg.party.floor(str(job.parties.passive)),
        ),
        names=(active_cfg.party.name, passive_cfg.party.name),
    )


def _every_user(shared: Alignment, e_ids: np.ndarray) -> tuple[Alignment, np.ndarray]:
    """All of E's users in id order, P's row of each (-1: P does not know the user)."""
    ids = np.asarray(e_ids).astype(str)
    by_id = np.argsort(ids, kind="stable")
    p_row = dict(zip(shared.ids.astype(str).tolist(), shared.passive_rows.tolist(), strict=True))
    passive = np.array([p_row.get(u, -1) for u in ids[by_id].tolist()], np.int64)
    everyone = Alignment(ids=ids[by_id], active_rows=by_id.astype(np.int64), passive_rows=passive)
    return everyone, passive >= 0


def _passive_tensors(
    table: FeatureTable, rows: np.ndarray, known: np.ndarray | None
) -> TableTensors:
    """P's features in ``rows`` order; with ``known``, zero (and code 0) for unknown users
    and a last numeric column ``p_known`` (1 for the users P knows)."""
    if known is None:
        return TableTensors.from_table(table, rows)
    t = TableTensors.from_table(table, np.where(known, rows, 0))
    mask = torch.as_tensor(known)
    flag = mask.to(torch.float32)[:, None]
    return TableTensors(
        numeric=torch.cat([t.numeric * flag, flag], dim=1),
        categorical=t.categorical * mask.to(torch.int64)[:, None],
        n_numeric=t.n_numeric + 1,
        cardinalities=t.cardinalities,
    )


def reorder(alignment: Alignment, order: np.ndarray) -> Alignment:
    """``alignment`` with its users in ``order``.

    Raises:
        DataError: ``order`` and the alignment hold different users.
    """
    where = {str(u): k for k, u in enumerate(alignment.ids.tolist())}
    ids = [str(u) for u in np.asarray(order).tolist()]
    if len(ids) != len(where) or any(u not in where for u in ids):
        raise DataError(
            "alignment",
            None,
            f"the given order has {len(ids)} users, the local intersection "
            f"{len(where)}, or names others",
            "pass the alignment of a run on the same data",
        )
    rows = np.array([where[u] for u in ids], np.int64)
    return Alignment(
        ids=alignment.ids[rows],
        active_rows=alignment.active_rows[rows],
        passive_rows=alignment.passive_rows[rows],
    )


def groups(prep: Prepared) -> dict[str, np.ndarray] | None:
    """With users P does not know: the test groups of a federated run (known / E-only)."""
    if prep.known is None or prep.known.all():
        return None
    return {KNOWN_TO_ALL: prep.known, E_ONLY: ~prep.known}


def _fit(
    prep: Prepared, model: Recommender, progress: ProgressFn | None, epochs: int | None
) -> FitResult:
    t = prep.job.train
    batcher = UserBatcher(
        prep.split,
        users_per_step=t.users_per_step,
        negatives_per_positive=t.negatives_per_positive,
        order_seed=prep.job.job.seed,
    )
    return fit(
        model,
        prep.split,
        batcher,
        stop=StopRule.of(t, epochs=epochs),
        seed=prep.job.job.seed,
        k=prep.job.eval.k,
        cold_quantile=prep.job.eval.cold_start_quantile,
        progress=progress,
        groups=groups(prep),
    )


def run_single(
    prep: Prepared, name: str, *, epochs: int | None, progress: ProgressFn | None = None
) -> FitResult:
    """Train a one-process model: ``e_alone`` or ``centralised``."""
    torch.manual_seed(prep.job.job.seed)
    users = prep.active.users
    if name == "centralised":
        users = joined_users(users, prep.passive_users)
    inputs = replace(prep.active, users=users)
    model = HeadRecommender(
        name, inputs, prep.job.model, prep.job.train, n_users=len(prep.alignment)
    )
    return _fit(prep, model, progress, epochs)


def run_split(
    prep: Prepared,
    *,
    epochs: int | None,
    progress: ProgressFn | None = None,
    channel_timeout: float = 120.0,
    secure: bool = False,
) -> tuple[FitResult, dict[str, int]]:
    """Train the split network with P serving from its own thread over an in-memory channel.

    ``secure`` selects the encrypted protocol (secret-shared ``W_B``, Paillier).

    Raises:
        ValueError: ``prep`` holds users P does not know (``every_user``): the in-process
            split asks P about every user; the party processes train those through ``a_k``.
    """
    if prep.known is not None and not prep.known.all():
        raise ValueError("the in-process split needs every user known to P (every_user=False)")
    torch.manual_seed(prep.job.job.seed)
    e_end, p_end = InMemoryChannel.pair("active", "passive")
    job_id = prep.job.job.name
    p_endpoint = Endpoint(p_end, job_id=job_id, timeout=channel_timeout)
    server = secure_server(prep, p_endpoint) if secure else passive_server(prep, p_endpoint)
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=_serve_catching, args=(server, errors), name="passive", daemon=True
    )
    thread.start()
    e_endpoint = Endpoint(e_end, job_id=job_id, timeout=channel_timeout)
    model = secure_model(prep, e_endpoint) if secure else plain_model(prep, e_endpoint)
    try:
        if isinstance(model, SecureSplitRecommender):
            model.peer.setup()
        result = _fit(prep, model, progress, epochs)
    finally:
        model.peer.shutdown(step=-1)
        thread.join(timeout=channel_timeout)
        if isinstance(model, SecureSplitRecommender) and isinstance(server, PassiveSecureServer):
            model.peer.share.close()
            server.share.close()
    if errors:
        raise errors[0]
    traffic = {
        "bytes_active_to_passive": e_end.traffic.bytes_sent,
        "bytes_passive_to_active": p_end.traffic.bytes_sent,
        "messages": e_end.traffic.messages_sent + p_end.traffic.messages_sent,
    }
    return result, traffic


def _report(
    prep: Prepared, per_seed: dict[int, dict[str, Any]], *, epochs: int | None, seconds: float
) -> dict[str, Any]:
    """``compare.json``: the job seed's rows as ``models``; with several seeds, each seed's
    rows and the noise over them."""
    report: dict[str, Any] = {
        "job": prep.job.job.name,
        "dataset": prep.job.job.name,
        "seed": prep.job.job.seed,
        "epochs": epochs or prep.job.train.epochs,
        "patience": prep.job.train.patience,
        "aligned_users": len(prep.alignment),
        "items": prep.split.n_items,
        "train_positives": len(prep.split.train_items),
        "test_users": len(prep.split.test.users),
        "k": prep.job.eval.k,
        "test_negatives": prep.job.eval.test_negatives,
        "models": per_seed[prep.job.job.seed],
    }
    if len(per_seed) > 1:
        report["per_seed"] = {str(s): rows for s, rows in per_seed.items()}
        report["noise"] = seed_noise(per_seed, k=prep.job.eval.k)
    report["total_seconds"] = round(seconds, 2)
    return report


def plain_model(prep: Prepared, endpoint: Endpoint) -> SplitRecommender:
    """E's side of the plaintext split."""
    return SplitRecommender(
        prep.active,
        prep.job.model,
        prep.job.train,
        n_users=len(prep.alignment),
        peer=PassivePeer(endpoint),
        defence=label_defence(prep.job.privacy),
    )


def secure_model(
    prep: Prepared, endpoint: Endpoint, executor: PartyExecutor | None = None
) -> SecureSplitRecommender:
    """E's side of the encrypted split: E's key pair and its rotation of the initial ``W_B``;
    its Paillier batches on ``executor`` (default: the job's local pools)."""
    cfg, t = prep.job.model, prep.job.train
    share = active_share(
        cfg,
        layer_settings(t, privacy=prep.job.privacy),
        LayerParty(prep.names[0], prep.allow_plaintext[0], prep.floors[0]),
        rotation_seed=prep.job.job.seed,  # in-process reference run: E's seeds from the job's
        executor=executor,
    )
    return SecureSplitRecommender(
        prep.active,
        cfg,
        t,
        n_users=len(prep.alignment),
        peer=SecurePassivePeer(endpoint, share),
        defence=label_defence(prep.job.privacy),
    )


def secure_server(
    prep: Prepared, endpoint: Endpoint, executor: PartyExecutor | None = None
) -> PassiveSecureServer:
    """P's side of the encrypted split: its bottom model, key pair and factor of ``W_B(0)``;
    its Paillier batches on ``executor`` (default: the job's local pools)."""
    plain = passive_server(prep, endpoint)
    share = passive_share(
        prep.job.model,
        layer_settings(prep.job.train, privacy=prep.job.privacy),
        LayerParty(prep.names[1], prep.allow_plaintext[1], prep.floors[1]),
        factor_seed=prep.job.job.seed + 1,
        noise_seed=prep.job.job.seed + 2,  # in-process reference run: P's seeds from the job's
        executor=executor,
    )
    return PassiveSecureServer(
        endpoint=endpoint,
        bottom=plain.bottom,
        numeric=plain.numeric,
        categorical=plain.categorical,
        optimizer=plain.optimizer,
        share=share,
    )


def passive_server(prep: Prepared, endpoint: Endpoint) -> PassivePlainServer:
    """P's side, built from P's own tensors and its own seed."""
    torch.manual_seed(prep.job.job.seed + 1)
    cfg, p = prep.job.model, prep.passive_users
    bottom = load_kind(prep.passive_kind).bottom(BottomInputs(p), cfg)
    optimizer = passive_optimizer(bottom, prep.job.train)
    return PassivePlainServer(
        endpoint=endpoint,
        bottom=bottom,
        numeric=p.numeric,
        categorical=p.categorical,
        optimizer=optimizer,
    )


def _serve_catching(server: PassivePlainServer, errors: list[BaseException]) -> None:
    try:
        server.serve()
    except BaseException as exc:
        errors.append(exc)


def compare_models(
    prep: Prepared, *, epochs: int | None, progress: ProgressFn | None, encrypted: bool
) -> dict[str, Any]:
    """The summary rows of the three models (four with ``encrypted``) on one prepared split."""
    rows: dict[str, Any] = {}
    rows["e_alone"] = summarise(run_single(prep, "e_alone", epochs=epochs, progress=progress))
    split_result, traffic = run_split(prep, epochs=epochs, progress=progress)
    rows["split_plaintext"] = {**summarise(split_result), **traffic}
    rows["centralised"] = summarise(
        run_single(prep, "centralised", epochs=epochs, progress=progress)
    )
    if encrypted:
        secure_result, traffic = run_split(prep, epochs=epochs, progress=progress, secure=True)
        rows["split_encrypted"] = {
            **summarise(secure_result),
            **traffic,
            "key_bits": prep.job.train.key_bits,
            "cost_of_privacy": round(
                secure_result.train_seconds / max(split_result.train_seconds, 1e-9), 1
            ),
        }
    return rows


def run_compare(
    job_file: str | Path,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    progress: ProgressFn | None = None,
    encrypted: bool = False,
    seeds: int = 1,
) -> dict[str, Any]:
    """Train the three models (four with ``encrypted``) and write ``compare.json``.

    With ``seeds > 1`` everything is trained again for the job seed plus 1 .. seeds-1: the
    report's ``models`` stay the job seed's, ``per_seed`` holds every seed's rows and
    ``noise`` the mean and standard deviation of each metric (:func:`seed_noise`).

    Raises:
        SecurityFloorError: ``encrypted`` and the job is below a party's own floor.
    """
    t0 = time.perf_counter()
    out = ensure_dir(out_dir)  # fail before training if the output cannot be written
    prep = prepare(job_file)
    if encrypted:  # each party's own floor, before anything trains or any key exists (the
        # layer checks it again)
        settings = layer_settings(prep.job.train)
        for floor, name in zip(prep.floors, prep.names, strict=True):
            check_floor(settings, floor, party=name)
    base = prep.job.job.seed
    per_seed: dict[int, dict[str, Any]] = {}
    for s in range(base, base + seeds):
        again = prep if s == base else prepare(job_file, seed=s)
        per_seed[s] = compare_models(again, epochs=epochs, progress=progress, encrypted=encrypted)
        report = _report(prep, per_seed, epochs=epochs, seconds=time.perf_counter() - t0)
        atomic_write_json(out / "compare.json", report)  # after every seed: a partial result
    write_report(report, out)
    return report
