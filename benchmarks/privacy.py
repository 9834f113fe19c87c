"""What each party could infer: the attack benchmark (issue 14), JSON out.

Usage: python benchmarks/privacy.py [--datasets synthetic,movielens] [--epochs 10]
           [--noise 0,DEFAULT] [--clip C] [--seeds 7,8,9]

For each dataset it prepares the embedded data, then for each label-noise multiplier runs the
project's own protocol with a recorder at P (:mod:`vfl.evaluation.privacy`; plaintext mode of
the secret-shared protocol: the same messages and, from the same seeds, the same ``∂L/∂b`` as
the encrypted run up to fixed-point error) and attacks what P received: gradient-norm
activity attack, cosine label-direction attack, the row-level counterfactual and the activity
audit, each per stage of training (steps 1-10, then each epoch), beside the model's test AUC
and HR@10 at its best validation epoch; each setting over ``--seeds`` (job seeds: split,
initial weights and negatives), with the mean and standard deviation of every figure.
At E, the attribute inference of ``benchmarks/privacy_zb.py`` on the ``z_B`` E decrypted at
the last evaluation (100 users of P's known to E; excess over E's own features).
``DEFAULT`` in ``--noise`` is the pilot's ``[privacy]``: the default label noise and the
pilot's embedding noise; any other level sets the label noise and turns the embedding noise
off.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from privacy_zb import own_features, p_attributes

from vfl.cli.pilot_cmd import PILOT_EMBEDDING_NOISE
from vfl.config.job import PrivacyConfig
from vfl.data.movielens import convert_movielens
from vfl.data.synthetic_writer import generate_synthetic
from vfl.evaluation.attribute_attack import attribute_inference
from vfl.training.compare import Prepared, prepare, run_single
from vfl.training.defences import label_epsilon
from vfl.training.privacy_audit import audit_split


def _data(name: str, root: Path) -> Path:
    out = root / name
    if name == "synthetic":
        generate_synthetic(out)
    else:
        convert_movielens(out)
    return out / "job.toml"


def _attributes(prep: Prepared, job: Path, z_b: np.ndarray, seed: int) -> dict[str, float]:
    """E's attribute inference from the ``z_B`` it decrypted: excess over its own features."""
    dataset = "movielens" if prep.job.job.name.startswith("movielens") else "synthetic"
    attrs = p_attributes(prep, job, dataset)
    report = attribute_inference(own_features(prep), z_b, attrs, seed=seed)
    return {s.attribute: round(s.excess, 4) for s in report.scores}


_E_ALONE: dict[tuple[Path, int], float] = {}


def _e_alone_hr(prep: Prepared, job: Path, seed: int, epochs: int) -> float:
    """HR@K of E alone on the same split (P's gain is measured against it), once per seed."""
    if (job, seed) not in _E_ALONE:
        _E_ALONE[job, seed] = run_single(prep, "e_alone", epochs=epochs).best.test.hr
    return _E_ALONE[job, seed]


def _run(job: Path, epochs: int, privacy: PrivacyConfig, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    text = re.sub(r"(?m)^seed = \d+$", f"seed = {seed}", job.read_text())
    seeded = job.with_name(f"job-seed{seed}.toml")
    seeded.write_text(text if "seed = " in text else f"[job]\nseed = {seed}\n" + text)
    prep = prepare(seeded)  # the split's candidates, weights, order and rows all follow it
    run = audit_split(prep, epochs=epochs, privacy=privacy)
    best = run.fit.best
    excess = _attributes(prep, seeded, run.z_b, seed)
    alone = _e_alone_hr(prep, job, seed, epochs)
    return {
        "seed": seed,
        "test_auc": round(best.test.auc, 4),
        "test_hr@10": round(best.test.hr, 4),
        "e_alone_hr@10": round(alone, 4),
        "hr_gain_from_p": round(best.test.hr - alone, 4),
        "best_epoch": best.epoch,
        **run.attacks.worst(),
        "attribute_excess": excess,
        "mean_attribute_excess": round(float(np.mean(list(excess.values()))), 4),
        "stages": {
            "activity": [dataclasses.asdict(f) for f in run.attacks.activity],
            "direction": [dataclasses.asdict(f) for f in run.attacks.direction],
            "counterfactual": [dataclasses.asdict(f) for f in run.attacks.counterfactual_auc],
        },
        "audit": dataclasses.asdict(run.attacks.audit),
        "seconds": round(time.perf_counter() - t0, 1),
    }


SUMMED = (
    "test_auc",
    "test_hr@10",
    "hr_gain_from_p",
    "activity_auc",
    "direction_auc",
    "counterfactual_auc",
    "mean_attribute_excess",
)


def _setting(job: Path, epochs: int, privacy: PrivacyConfig, seeds: list[int]) -> dict[str, Any]:
    runs = [_run(job, epochs, privacy, seed) for seed in seeds]
    summary = {
        k: {
            "mean": round(statistics.fmean(r[k] for r in runs), 4),
            "sd": round(statistics.stdev(r[k] for r in runs), 4) if len(runs) > 1 else 0.0,
        }
        for k in SUMMED
    }
    return {
        "label_noise": privacy.label_noise,
        "label_clip": privacy.label_clip,
        "embedding_noise": privacy.embedding_noise,
        "epsilon_per_user": round(label_epsilon(privacy.label_noise, epochs), 1),
        "summary": summary,
        "runs": runs,
    }


def main() -> None:
    """Parse arguments, run every dataset and setting, print one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="synthetic,movielens")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--noise", default="0,DEFAULT", help="label-noise multipliers")
    ap.add_argument("--clip", type=float, default=None, help="override the clipping bound")
    ap.add_argument("--seeds", default="7,8,9", help="job seeds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    default = PrivacyConfig()
    seeds = [int(x) for x in args.seeds.split(",")]
    out: dict[str, Any] = {"default_privacy": default.model_dump(), "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            job = _data(name, Path(tmp))
            rows = []
            for level in args.noise.split(","):
                update: dict[str, float] = (
                    {"embedding_noise": PILOT_EMBEDDING_NOISE}
                    if level == "DEFAULT"
                    else {"label_noise": float(level), "embedding_noise": 0.0}
                )
                if args.clip is not None:
                    update["label_clip"] = args.clip
                privacy = default.model_copy(update=update)
                rows.append(_setting(job, args.epochs, privacy, seeds))
                print(f"{name} noise={privacy.label_noise}: {rows[-1]['summary']}", file=sys.stderr)
            out[name] = rows
    out["loadavg"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
