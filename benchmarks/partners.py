"""E with one or two passive parties on the embedded three-organisation data; JSON out.

Usage: ``python benchmarks/partners.py [--users 1500] [--items 300] [--seed 7]
[--third-share 0.5] [--epochs 20] [--mode plaintext|encrypted] [--bits 2048] [--out FILE]``

1. ``vfl data synth --parties 3``'s data: E (the shop), P (payments) and L (logistics, a
   random ``--third-share`` of the customers).
2. E trains the federated model, all of its users in (``UserScope.ALL``), with the partner
   sets {P}, {L} and {P, L}: each partner serves from its own thread over its own in-memory
   channel with the real secret-shared layer; ``--mode plaintext`` is its plaintext mode (the
   same messages, the same model up to the fixed-point error; much faster), ``encrypted``
   Paillier at ``--bits``. The job's training settings are the pilot's (early stopping on
   validation NDCG@10).
3. Reported per run: the test metrics of the selected epoch over all of E's users and per
   group (known to both partners, to one, to none), and each partner's gain: the full run's
   metric minus that of the run without the partner, over all of E's users.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vfl.cli.pilot_cmd import Dataset, pilot_train
from vfl.config.job import TrainConfig
from vfl.config.party import load_party_config
from vfl.config.plan import load_plan_file
from vfl.data.loading import load_party_data
from vfl.data.synthetic_writer import generate_synthetic
from vfl.data.tables import ActiveData
from vfl.party.in_process import train_with_partners
from vfl.protocol.options import Mode

PARTNER_SETS = (("payments",), ("logistics",), ("payments", "logistics"))


def _row(metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    s = metrics["split_encrypted"]
    keep = ("hr@10", "ndcg@10", "auc")
    return {
        **{k: round(s[k], 4) for k in keep},
        "best_epoch": s["best_epoch"],
        "epochs_trained": s["epochs_trained"],
        "seconds": round(seconds, 1),
        "partners": metrics["partners"],
        "groups": {
            g: {**{k: round(m[k], 4) for k in keep}, "test_users": m["test_users"]}
            for g, m in s.get("groups", {}).items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--third-share", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.PLAINTEXT.value)
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vfl-partners-") as tmp:
        data_dir = Path(tmp) / "data"
        generate_synthetic(
            data_dir,
            users=args.users,
            items=args.items,
            seed=args.seed,
            third_party=args.third_share,
        )
        base = load_plan_file(data_dir / "job.toml")
        train = {**base.train.model_dump(), **pilot_train(Dataset.SYNTHETIC, epochs=args.epochs)}
        train |= {"protocol": args.mode, "key_bits": args.bits}
        plan = base.model_copy(update={"train": TrainConfig(**train)})
        active = load_party_data(load_party_config(data_dir / "e_party.toml"))
        partners = {
            "payments": load_party_data(load_party_config(data_dir / "p_party.toml")),
            "logistics": load_party_data(load_party_config(data_dir / "l_party.toml")),
        }
        assert isinstance(active, ActiveData)
        runs: dict[str, Any] = {}
        for names in PARTNER_SETS:
            chosen = {n: partners[n] for n in names}
            t0 = time.perf_counter()
            metrics = train_with_partners(active, chosen, plan, Path(tmp) / "+".join(names))  # type: ignore[arg-type]
            runs["+".join(names)] = _row(metrics, time.perf_counter() - t0)
            print(f"{'+'.join(names)}: {json.dumps(runs['+'.join(names)])}", file=sys.stderr)
    full = runs["payments+logistics"]
    gains = {
        name: {k: round(full[k] - runs[other][k], 4) for k in ("hr@10", "ndcg@10", "auc")}
        for name, other in (("payments", "logistics"), ("logistics", "payments"))
    }
    report = {
        "data": {
            "users": args.users,
            "items": args.items,
            "seed": args.seed,
            "third_share": args.third_share,
        },
        "mode": args.mode,
        "key_bits": args.bits,
        "runs": runs,
        "gain_of_partner": gains,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
