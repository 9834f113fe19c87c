"""The pilot's baselines and its merged results (``metrics.json``, ``report.md``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from vfl.cli.pilot_runs import FederatedRun, RunFiles
from vfl.config.job import load_job_config
from vfl.evaluation.report import write_report
from vfl.party.common import in_id_order, load_alignment
from vfl.storage import atomic_write_json

ORDER = ("e_alone", "split_plaintext", "split_encrypted", "centralised")


def baseline_rows(
    job: Path, out: Path, *, epochs: int, plaintext: bool, centralised: bool = True
) -> dict[str, Any]:
    """E alone and centralised, in one process, on the federated run's users in its order:
    all of E's users by id (those P does not know too, as the federated run trains them
    through ``a_k``; the centralised model sees zeros and ``p_known = 0`` for them). The
    split's candidate lists are keyed by user id and seed, and the same positions with the
    same seed give the same batches. Without the protocol's plaintext mode in this build,
    the in-process plaintext split (on the shared users) stands in for VFL plaintext
    (marked ``in_process``). ``centralised=False`` (several partners: the centralised
    model is a two-party replay) trains E alone only.
    """
    import torch

    from vfl.training.compare import prepare, run_single, run_split
    from vfl.training.summary import summarise

    torch.set_num_threads(1)  # small models: more threads only spin on a shared machine
    prep = prepare(job, every_user=True)
    rows = {
        name: summarise(run_single(prep, name, epochs=epochs))
        for name in ("e_alone", "centralised")
        if centralised or name == "e_alone"
    }
    if not plaintext:
        order = in_id_order(load_alignment(out / "e" / "alignment.json")).ids  # training order
        result, traffic = run_split(prepare(job, order=order), epochs=epochs)
        rows["split_plaintext"] = {**summarise(result), **traffic, "in_process": True}
    return rows


_KEEP = ("hr@10", "ndcg@10", "auc")


def partner_gains(files: RunFiles, seeds: dict[str, int]) -> dict[str, Any]:
    """Each partner's gain: E's test metrics over all of its users trained with every
    partner, minus those trained without that partner.

    The runs are in one process in plaintext mode (the same model as encrypted up to the
    fixed-point error; :mod:`vfl.party.in_process`), on the run's data and job with the
    pilot's local seeds; each partner's alignment is its intersection with E.
    """
    import torch

    from vfl.config.job import TrainConfig
    from vfl.config.party import load_party_config
    from vfl.config.plan import load_plan_file
    from vfl.data.loading import load_party_data
    from vfl.data.tables import ActiveData, PassiveData
    from vfl.party.in_process import train_with_partners

    torch.set_num_threads(1)
    base = load_plan_file(files.job)
    train = TrainConfig(**{**base.train.model_dump(), "protocol": "plaintext"})
    plan = base.model_copy(update={"train": train})
    cfgs = {k: load_party_config(f) for k, f in files.parties.items()}
    active = load_party_data(cfgs.pop("e"))
    loaded = {c.party.name: load_party_data(c) for c in cfgs.values()}
    passives = {k: d for k, d in loaded.items() if isinstance(d, PassiveData)}
    if not isinstance(active, ActiveData) or len(passives) != len(loaded):
        raise TypeError("the pilot's first party must be active, the others passive")
    local = {"e": seeds["e"], **{c.party.name: seeds[k] for k, c in cfgs.items()}}
    names = list(passives)
    sets = [names] + [[n for n in names if n != k] for k in names]
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="vfl-gains-") as tmp:
        for chosen in sets:
            key = "+".join(chosen)
            chosen_data = {n: passives[n] for n in chosen}
            m = train_with_partners(
                active,
                chosen_data,
                plan,
                Path(tmp) / key,
                local_seeds=local,
            )
            row = m["split_encrypted"]
            runs[key] = {
                **{k: round(float(row[k]), 4) for k in _KEEP},
                "best_epoch": row["best_epoch"],
                "epochs_trained": row["epochs_trained"],
                "aligned_users": {k: v["aligned_users"] for k, v in m["partners"].items()},
            }
    full = runs["+".join(names)]
    gain = {
        k: {m: round(full[m] - runs["+".join(n for n in names if n != k)][m], 4) for m in _KEEP}
        for k in names
    }
    return {"mode": "plaintext, in one process", "runs": runs, "gain": gain}


def privacy_audit(job: Path, out: Path, *, epochs: int) -> dict[str, Any]:
    """What each party could infer in this pilot: the job replayed in-process on the run's
    aligned order with its ``[privacy]`` settings, and once without the label defence."""
    import torch

    from vfl.training.compare import prepare
    from vfl.training.privacy_audit import audit_split, audit_summary

    torch.set_num_threads(1)
    order = in_id_order(load_alignment(out / "e" / "alignment.json")).ids
    prep = prepare(job, order=order)
    privacy = prep.job.privacy
    as_run = audit_split(prep, epochs=epochs)
    bare = audit_split(prep, epochs=epochs, privacy=privacy.model_copy(update={"label_noise": 0}))
    return audit_summary(privacy, as_run, bare, epochs)


def _row(run: FederatedRun) -> dict[str, Any]:
    """E's model row of a federated run, with its wall time and E's bytes."""
    metrics = run.metrics
    row = next(v for k, v in metrics.items() if k.startswith("split") and isinstance(v, dict))
    phases = metrics.get("phases", [])
    return {
        **row,
        "federated_seconds": round(run.seconds, 1),
        "bytes_sent_by_e": sum(int(p["bytes_sent"]) for p in phases),
        "bytes_received_by_e": sum(int(p["bytes_received"]) for p in phases),
        "processes": run.processes,
    }


def _ratio(a: float, b: float) -> float | None:
    return None if b <= 0 else round(a / b, 2)


def cost_of_privacy(
    enc: dict[str, Any], plain: dict[str, Any], runs: dict[str, FederatedRun]
) -> dict[str, Any]:
    """Encrypted over plaintext: training time, whole run, bytes, and each phase."""
    plain_phases = {p["phase"]: p for p in runs["plaintext"].metrics.get("phases", [])}
    per_phase = []
    for p in runs["encrypted"].metrics.get("phases", []):
        q = plain_phases.get(p["phase"])
        if q is None:
            continue
        b_enc = int(p["bytes_sent"]) + int(p["bytes_received"])
        b_plain = int(q["bytes_sent"]) + int(q["bytes_received"])
        per_phase.append(
            {
                "phase": p["phase"],
                "time": _ratio(float(p["seconds"]), float(q["seconds"])),
                "bytes": _ratio(b_enc, b_plain),
            }
        )
    bytes_enc = enc["bytes_sent_by_e"] + enc["bytes_received_by_e"]
    bytes_plain = plain["bytes_sent_by_e"] + plain["bytes_received_by_e"]
    return {
        "training_time": _ratio(enc["wall_seconds"], plain["wall_seconds"]),
        "run_time": _ratio(enc["federated_seconds"], plain["federated_seconds"]),
        "bytes": _ratio(bytes_enc, bytes_plain),
        "per_phase": per_phase,
    }


def _psi(out: Path, run: FederatedRun) -> dict[str, Any]:
    """E's PSI figures plus P's set size (from P's own ``psi.json``)."""
    psi = dict(run.metrics.get("psi", {}))
    p_file = out / "p" / "psi.json"
    if p_file.is_file():
        psi["p_ids"] = json.loads(p_file.read_text()).get("p_ids")
    return psi


def merge(
    runs: dict[str, FederatedRun], base: dict[str, Any], *, dataset: str, out: Path, job: Path
) -> dict[str, Any]:
    """One results dict: the four models, phases of each federated run, PSI, cost of privacy."""
    enc_run = runs["encrypted"]
    rows = dict(base)
    rows["split_encrypted"] = _row(enc_run)
    if "plaintext" in runs:
        rows["split_plaintext"] = _row(runs["plaintext"])
    cfg = load_job_config(job)
    results: dict[str, Any] = {
        "job": "pilot",
        "dataset": dataset,
        "seed": cfg.job.seed,
        "epochs": cfg.train.epochs,  # the most; each model's own count is in its row
        "patience": cfg.train.patience,
        "time_budget_s": cfg.train.time_budget_s,
        "users_per_step": cfg.train.users_per_step,
        "key_bits": cfg.train.key_bits,
        "aligned_users": enc_run.metrics["aligned_users"],
        "test_users": enc_run.metrics["test_users"],
        "k": cfg.eval.k,
        "test_negatives": cfg.eval.test_negatives,
        "models": {k: rows[k] for k in ORDER if k in rows},
        "phases": enc_run.metrics.get("phases", []),
        "phase_runs": {f"split_{m}": r.metrics.get("phases", []) for m, r in runs.items()},
        "psi": _psi(out, enc_run),
        "federated": {
            "key_bits": enc_run.metrics["key_bits"],
            "aligned_users_psi": enc_run.metrics["aligned_users"],
            "coordinator_saw": enc_run.coordinator_saw(),
            "same_local_seeds": "plaintext" in runs,
        },
    }
    if "plaintext" in runs:
        cost = cost_of_privacy(rows["split_encrypted"], rows["split_plaintext"], runs)
        results["cost_of_privacy"] = cost
        rows["split_encrypted"]["cost_of_privacy"] = cost["training_time"]
        results["federated"]["coordinator_saw_plaintext"] = runs["plaintext"].coordinator_saw()
    elif "split_plaintext" in rows:
        plain = rows["split_plaintext"]["wall_seconds"]
        rows["split_encrypted"]["cost_of_privacy"] = _ratio(
            rows["split_encrypted"]["wall_seconds"], plain
        )
    return results


def write_outputs(results: dict[str, Any], out: Path) -> Path:
    """``metrics.json`` (and the same as ``pilot.json``), then ``report.md`` with its plots."""
    atomic_write_json(out / "metrics.json", results)
    atomic_write_json(out / "pilot.json", results)
    return write_report(results, out)
