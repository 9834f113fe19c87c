"""Soak: one long job with a kill -9 every few seconds, then the same job uninterrupted; JSON.

Usage: ``python benchmarks/soak.py [--kills 12] [--epochs 24] [--every 5] [--seed 0]``

The job runs as three real processes (coordinator, E, P) over gRPC + mutual TLS on loopback,
512-bit keys and tiny synthetic data (the supervisor of ``tests/fault_harness.py``). After the
job starts, and then ``every`` seconds (times 0.5 to 1.5, seeded) after each kill, a victim
drawn from {E, P, coordinator} is killed with SIGKILL (with its worker processes) and
started again with the same command; a party that stops because its peer vanished is
restarted too. When the job is done, the same job runs once more without kills on the
alignment the first run agreed, and the two models are compared (every step's loss within
1e-5, ``W_B`` within 1e-9, both parties' layers within 1e-5, metrics within 1e-4).

Prints ``{"kills", "resumes", "matched", "wall_s", ...}``: ``kills`` that landed (a kill due
after the job finished is not made), ``resumes`` party restarts, ``matched`` whether the
final model equals the uninterrupted one, ``wall_s`` of the killed run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fault_harness import Job, Kill, final_model, mismatches

VICTIMS = ("e", "p", "coordinator")


def plan(kills: int, every: float, seed: int) -> list[Kill]:
    """``kills`` kills, each ``every`` s (times 0.5-1.5) after the previous one."""
    rng = random.Random(seed)
    out = []
    for _ in range(kills):
        wait = every * (0.5 + rng.random())
        out.append(
            Kill(
                rng.choice(VICTIMS),
                (lambda w: lambda job: time.monotonic() - job.last_kill_at >= w)(wait),
                0.0,
                "periodic",
                may_miss=True,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vfl-soak-"))
    killed = Job(root / "killed", epochs=args.epochs)
    try:
        out = killed.supervise(plan(args.kills, args.every, args.seed), timeout=1800)
    finally:
        killed.stop_all()
    again = Job(root / "uninterrupted", epochs=args.epochs)
    again.seed_alignment(killed)
    try:
        reference = again.supervise([], timeout=600)
    finally:
        again.stop_all()
    bad = mismatches(final_model(killed), final_model(again))
    result = {
        "kills": len(out.kills),
        "kills_planned": args.kills,
        "resumes": out.resumes,
        "matched": not bad,
        "wall_s": round(out.wall_s, 1),
        "uninterrupted_wall_s": round(reference.wall_s, 1),
        "kills_by_process": dict(Counter(v for v, _ in out.phases)),
        "kills_by_phase": dict(Counter(p for _, p in out.phases)),
        "restarts": out.restarts,
        "steps": len(final_model(killed).losses),
        "mismatches": bad,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "work_dir": str(root),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
