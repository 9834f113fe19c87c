"""Trade-off of P's embedding protection: what E infers from ``z_B`` against what P adds.

Usage: python benchmarks/privacy_zb.py [--dataset movielens|synthetic] [--levels 0,0.25,...]
           [--seed 0] [--epochs N] [--users 2000] [--known 100]

For each protection level (``[privacy] embedding_noise``, the multiplier of P's noise in
units of ``|b_i| < 1``, see :mod:`vfl.protocol.embedding_noise`) it trains the split model
through the secret-shared layer, both parties in this process (P in a thread) over the
in-memory channel, in the layer's **plaintext mode**: the same messages and the same noise
as the encrypted protocol (P's noise is a function of its seed, the step and the user, not
of the mode), without the Paillier cost. It then asks P for ``z_B`` of every aligned user,
as an evaluation does, and runs E's attack (:mod:`vfl.evaluation.attribute_attack`) with
``--known`` users whose attributes E knows: on MovieLens-100K age (R²) and gender
(accuracy), on synthetic data each of P's features. E's own features are its user table plus
its behaviour (log of the user's training positives, mean features of their items).

Printed JSON: per level the attack scores and excess over E's own features, test HR@10 and
AUC at the best validation epoch, and the HR@10 gain over E alone (same split, seed and
epochs); then ``chosen``: the smallest level whose mean excess over the attacked attributes
is at most half of the unprotected one (or below ``NOISE_FLOOR``) while keeping at least
half of the unprotected HR@10 gain (None if no level does both, or if P adds no HR@10 gain
to keep), and ``chosen_every_attribute``, the same with every attribute's excess halved.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vfl.config.job import load_job_parties
from vfl.data.loading import load_party_data
from vfl.data.tables import PassiveData
from vfl.evaluation.attribute_attack import (
    AttackReport,
    Attribute,
    AttributeKind,
    attribute_inference,
)
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.options import Mode
from vfl.training.compare import Prepared, prepare, run_single, secure_model, secure_server
from vfl.training.inputs import UserBatcher
from vfl.training.loop import EVAL_CHUNK_USERS, FitResult, fit
from vfl.transport.channel import InMemoryChannel

LEVELS = (0.0, 0.25, 0.5, 1.0, 2.0)
MOVIELENS_ATTRIBUTES = ("age", "gender")
# An excess this small counts as halved: about one standard error of an accuracy on ~850
# scored users (sqrt(0.7·0.3/850) = 0.016), below which "half" is not measurable.
NOISE_FLOOR = 0.02


@dataclass(frozen=True)
class LevelResult:
    """One protection level: model quality and E's attack on what it decrypted."""

    level: float
    hr: float
    auc: float
    gain: float  # HR@K over E alone
    attack: AttackReport

    def excess(self) -> dict[str, float]:
        """The attack's excess over E's own features, per attribute."""
        return {s.attribute: s.excess for s in self.attack.scores}

    def mean_excess(self) -> float:
        """The excess averaged over the attacked attributes."""
        return float(np.mean(list(self.excess().values())))


@dataclass(frozen=True)
class Tradeoff:
    """The curve of one dataset and the level chosen from it."""

    dataset: str
    seed: int
    epochs: int
    k: int
    e_alone_hr: float
    e_alone_auc: float
    levels: tuple[LevelResult, ...]
    label_noise: float = 0.0  # E's label defence in every run (the job's [privacy])

    def chosen(self, *, every_attribute: bool = False) -> float | None:
        """Smallest level halving the mean excess (or, with ``every_attribute``, each one)
        and keeping half of the unprotected HR gain; None if none does, or if P adds none."""
        base = next((r for r in self.levels if r.level == 0.0), None)
        if base is None or base.gain <= 0:
            return None
        for r in sorted(self.levels, key=lambda r: r.level):
            if every_attribute:
                halved = all(
                    r.excess()[a] <= max(0.5 * e, NOISE_FLOOR) for a, e in base.excess().items()
                )
            else:
                halved = r.mean_excess() <= max(0.5 * base.mean_excess(), NOISE_FLOOR)
            if halved and r.gain >= 0.5 * base.gain:
                return r.level
        return None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, with the table rows first."""
        return {
            "dataset": self.dataset,
            "seed": self.seed,
            "epochs": self.epochs,
            "mode": "plaintext mode of the secret-shared layer (same noise as encrypted)",
            "label_noise": self.label_noise,
            f"e_alone_hr@{self.k}": self.e_alone_hr,
            "e_alone_auc": self.e_alone_auc,
            "table": [_row(r, self.k) for r in self.levels],
            "chosen": self.chosen(),
            "chosen_every_attribute": self.chosen(every_attribute=True),
            "attacks": {str(r.level): r.attack.as_dict() for r in self.levels},
        }


def _row(r: LevelResult, k: int) -> dict[str, float]:
    row = {"level": r.level, f"hr@{k}": r.hr, "auc": r.auc, f"gain_hr@{k}": r.gain}
    row["mean_excess"] = r.mean_excess()
    row.update({f"excess_{a}": e for a, e in r.excess().items()})
    return row


def load(dataset: str, seed: int, users: int) -> tuple[Prepared, Path]:
    """The dataset as both parties see it, with plaintext mode allowed for this run."""
    folder = Path(tempfile.mkdtemp(prefix=f"vfl-privacy-zb-{dataset}-"))
    if dataset == "movielens":
        from vfl.data.movielens import convert_movielens

        convert_movielens(folder)
    elif dataset == "synthetic":
        from vfl.data.synthetic_writer import generate_synthetic

        generate_synthetic(folder, users=users)
    else:
        raise SystemExit(f"unknown dataset {dataset!r}: use movielens or synthetic")
    prep = prepare(folder / "job.toml")
    train = prep.job.train.model_copy(update={"protocol": Mode.PLAINTEXT})
    job = prep.job.model_copy(
        update={"train": train, "job": prep.job.job.model_copy(update={"seed": seed})}
    )
    return replace(prep, job=job, allow_plaintext=(True, True)), folder / "job.toml"


def train_protected(prep: Prepared, level: float, epochs: int) -> tuple[FitResult, np.ndarray]:
    """Train the split model with P's noise at ``level``; ``z_B`` E then gets for everyone."""
    privacy = prep.job.privacy.model_copy(update={"embedding_noise": level})
    job = prep.job.model_copy(update={"privacy": privacy})
    prep = replace(prep, job=job)
    e_end, p_end = InMemoryChannel.pair("active", "passive")
    server = secure_server(prep, Endpoint(p_end, job_id="privacy-zb", timeout=600))
    thread = threading.Thread(target=server.serve, name="passive", daemon=True)
    thread.start()
    model = secure_model(prep, Endpoint(e_end, job_id="privacy-zb", timeout=600))
    try:
        model.peer.setup()
        t = prep.job.train
        batcher = UserBatcher(
            prep.split,
            users_per_step=t.users_per_step,
            negatives_per_positive=t.negatives_per_positive,
        )
        result = fit(
            model, prep.split, batcher, epochs=epochs, seed=prep.job.job.seed, k=prep.job.eval.k
        )
        everyone = np.arange(len(prep.alignment), dtype=np.int64)
        chunks = [
            everyone[s : s + EVAL_CHUNK_USERS] for s in range(0, len(everyone), EVAL_CHUNK_USERS)
        ]
        # an evaluation's view: every aligned user at one step, in evaluation-sized requests
        z_b = np.concatenate([model.peer.forward(10**6, c, train=False) for c in chunks])
    finally:
        model.peer.shutdown(step=-1)
        thread.join(timeout=60)
        model.peer.share.close()
        server.share.close()
    return result, z_b


def own_features(prep: Prepared) -> np.ndarray:
    """E's own knowledge per aligned user: its user table and a summary of its behaviour."""
    n = len(prep.alignment)
    users = prep.active.users
    parts = [users.numeric.numpy().astype(np.float64)]
    for j, card in enumerate(users.cardinalities):
        parts.append(np.eye(card)[users.categorical[:, j].numpy()])
    counts = np.bincount(prep.split.train_users, minlength=n).astype(np.float64)
    items = prep.active.items.numeric.numpy().astype(np.float64)
    sums = np.zeros((n, items.shape[1]))
    np.add.at(sums, prep.split.train_users, items[prep.split.train_items])
    parts += [np.log1p(counts)[:, None], sums / np.maximum(counts, 1.0)[:, None]]
    return np.hstack([p.reshape(n, -1) for p in parts])


def p_attributes(prep: Prepared, job_file: Path, dataset: str) -> list[Attribute]:
    """P's true attributes in aligned order (what E wants to learn)."""
    _, passive_cfg = load_job_parties(prep.job, job_file)
    data = load_party_data(passive_cfg)
    if not isinstance(data, PassiveData):
        raise TypeError("the passive slot holds P's config")
    table = data.users.take(prep.alignment.passive_rows)
    attrs = [
        Attribute(name, AttributeKind.NUMERIC, table.numeric[:, j].astype(np.float64))
        for j, name in enumerate(table.numeric_names)
    ]
    attrs += [
        Attribute(name, AttributeKind.CATEGORICAL, table.categorical[:, j].astype(np.int64))
        for j, name in enumerate(table.categorical_names)
    ]
    if dataset == "movielens":
        attrs = [a for a in attrs if a.name in MOVIELENS_ATTRIBUTES]
    return attrs


def run(
    dataset: str,
    levels: list[float],
    seed: int,
    *,
    epochs: int | None = None,
    users: int = 2000,
    known: int = 100,
) -> Tradeoff:
    """Train E alone and the protected split model at every level; attack each."""
    prep, job_file = load(dataset, seed, users)
    epochs = epochs or prep.job.train.epochs
    alone = run_single(prep, "e_alone", epochs=epochs).best.test
    attrs, own = p_attributes(prep, job_file, dataset), own_features(prep)
    rows = []
    for level in levels:
        result, z_b = train_protected(prep, level, epochs)
        test = result.best.test
        attack = attribute_inference(own, z_b, attrs, known=known, seed=seed)
        rows.append(LevelResult(level, test.hr, test.auc, test.hr - alone.hr, attack))
    k, label = prep.job.eval.k, prep.job.privacy.label_noise
    return Tradeoff(dataset, seed, epochs, k, alone.hr, alone.auc, tuple(rows), label)


def main() -> None:
    """Parse the command line, run, print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="movielens", choices=("movielens", "synthetic"))
    ap.add_argument("--levels", default=",".join(str(x) for x in LEVELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--users", type=int, default=2000, help="synthetic: size of the union")
    ap.add_argument("--known", type=int, default=100)
    args = ap.parse_args()
    levels = [float(x) for x in args.levels.split(",")]
    out = run(
        args.dataset, levels, args.seed, epochs=args.epochs, users=args.users, known=args.known
    )
    print(json.dumps(out.as_dict(), indent=1))


if __name__ == "__main__":
    main()
