"""What each party could infer: the attack benchmark (issue 14), JSON out.

Usage: python benchmarks/privacy.py [--datasets synthetic,movielens] [--epochs 4]
           [--noise 0,DEFAULT] [--clip C]

For each dataset it prepares the embedded data, then for each label-noise multiplier runs the
project's own protocol with a recorder at P (:mod:`vfl.evaluation.privacy`; plaintext mode of
the secret-shared protocol: the same messages and, from the same seeds, the same ``∂L/∂b`` as
the encrypted run up to fixed-point error) and attacks what P received: gradient-norm
activity attack, cosine label-direction attack, the row-level counterfactual and the activity
audit, each per stage of training (steps 1-10, then each epoch), beside the model's test AUC
and HR@10 at its best validation epoch. ``DEFAULT`` in ``--noise`` is the pilot's setting
(:data:`vfl.cli.pilot_defaults.PILOT_PRIVACY`). E's attribute inference from ``z_B`` is
``benchmarks/privacy_zb.py``; its figures are added here when that module is present.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vfl.config.job import PrivacyConfig
from vfl.data.movielens import convert_movielens
from vfl.data.synthetic_writer import generate_synthetic
from vfl.evaluation.privacy import audit_split
from vfl.training.compare import prepare
from vfl.training.defences import label_epsilon


def _pilot_privacy() -> PrivacyConfig:
    try:
        from vfl.cli.pilot_defaults import PILOT_PRIVACY  # type: ignore[import-not-found]
    except ImportError:
        return PrivacyConfig(label_noise=1.0)
    return PILOT_PRIVACY  # type: ignore[no-any-return]


def _data(name: str, root: Path) -> Path:
    out = root / name
    if name == "synthetic":
        generate_synthetic(out)
    else:
        convert_movielens(out)
    return out / "job.toml"


def _run(job: Path, epochs: int, privacy: PrivacyConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    prep = prepare(job)
    run = audit_split(prep, epochs=epochs, privacy=privacy)
    best = run.fit.best
    return {
        "label_noise": privacy.label_noise,
        "label_clip": privacy.label_clip,
        "epsilon_per_user": round(label_epsilon(privacy.label_noise, epochs), 2),
        "test_auc": round(best.test.auc, 4),
        "test_hr@10": round(best.test.hr, 4),
        "best_epoch": best.epoch,
        "worst": run.attacks.worst(),
        "activity_attack": [dataclasses.asdict(f) for f in run.attacks.activity],
        "direction_attack": [dataclasses.asdict(f) for f in run.attacks.direction],
        "counterfactual": [dataclasses.asdict(f) for f in run.attacks.counterfactual_auc],
        "audit": dataclasses.asdict(run.attacks.audit),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    """Parse arguments, run every dataset and setting, print one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="synthetic,movielens")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--noise", default="0,DEFAULT", help="label-noise multipliers")
    ap.add_argument("--clip", type=float, default=None, help="override the clipping bound")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pilot = _pilot_privacy()
    out: dict[str, Any] = {"pilot_privacy": pilot.model_dump(), "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            job = _data(name, Path(tmp))
            rows = []
            for level in args.noise.split(","):
                privacy = pilot if level == "DEFAULT" else pilot.model_copy(
                    update={"label_noise": float(level)}
                )
                if args.clip is not None:
                    privacy = privacy.model_copy(update={"label_clip": args.clip})
                rows.append(_run(job, args.epochs, privacy))
                print(f"{name} noise={privacy.label_noise}: {rows[-1]['worst']}", file=sys.stderr)
            out[name] = rows
    out["loadavg"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
