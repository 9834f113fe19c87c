"""End-to-end cost of the ECDH-PSI, printed as JSON.

Usage: ``python benchmarks/bench_psi.py [--n 20000] [--overlap 0.5] [--chunk-size 4096]``

Runs E (active) and P (passive), ``n`` ids each with a fraction ``overlap`` in common, in two
threads over an in-memory channel, and reports wall time, the bytes each side sent, and the
mean cost of one ``hash_to_point`` and one ``blind`` measured separately on one thread.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Sequence

from vfl.config.party import Role
from vfl.psi import curve
from vfl.psi.protocol import DEFAULT_CHUNK_SIZE, PsiResult, run_psi
from vfl.transport.channel import InMemoryChannel

_JOB = "bench-psi"


def _mean_us(operation: Callable[[int], object], n: int) -> float:
    """Mean wall time in microseconds of ``operation(i)`` for ``i`` in ``range(n)``."""
    start = time.perf_counter()
    for i in range(n):
        operation(i)
    return round((time.perf_counter() - start) * 1e6 / n, 2)


def _keep(raw: str) -> str:
    """Identity normalisation (the ids are generated already normalised)."""
    return raw


def _id_sets(n: int, overlap: float) -> tuple[list[str], list[str]]:
    """``n`` ids per side, the first ``overlap * n`` of them shared."""
    common = int(n * overlap)
    e_ids = [f"user-{i:08d}" for i in range(n)]
    p_ids = [f"user-{i:08d}" for i in range(n - common, 2 * n - common)]
    return e_ids, p_ids


def _run_both(e_ids: Sequence[str], p_ids: Sequence[str], chunk_size: int) -> dict[str, object]:
    """One PSI run of both sides in two threads; wall time, bytes sent and common count."""
    ch_e, ch_p = InMemoryChannel.pair("E", "P")
    results: dict[str, PsiResult] = {}

    def passive() -> None:
        results["P"] = run_psi(
            ch_p, p_ids, job_id=_JOB, role=Role.PASSIVE, normalise=_keep,
            party="P", chunk_size=chunk_size,
        )  # fmt: skip

    start = time.perf_counter()
    thread = threading.Thread(target=passive, daemon=True)
    thread.start()
    results["E"] = run_psi(
        ch_e, e_ids, job_id=_JOB, role=Role.ACTIVE, normalise=_keep,
        party="E", chunk_size=chunk_size,
    )  # fmt: skip
    thread.join()
    seconds = time.perf_counter() - start
    if "P" not in results or results["P"].ids != results["E"].ids:
        raise RuntimeError("the two sides disagree on the aligned intersection")
    return {
        "seconds": round(seconds, 3),
        "n_common": results["E"].n_common,
        "bytes_e_to_p": ch_e.traffic.bytes_sent,
        "bytes_p_to_e": ch_p.traffic.bytes_sent,
        "messages_e_to_p": ch_e.traffic.messages_sent,
    }


def run(n: int, overlap: float, chunk_size: int) -> dict[str, object]:
    """The benchmark report."""
    e_ids, p_ids = _id_sets(n, overlap)
    point, scalar = curve.hash_to_point("x", _JOB), curve.random_scalar()
    reps = min(n, 2000)
    return {
        "ids_per_side": n,
        "overlap": overlap,
        "chunk_size": chunk_size,
        **_run_both(e_ids, p_ids, chunk_size),
        "us_per_hash_to_point": _mean_us(lambda i: curve.hash_to_point(e_ids[i], _JOB), reps),
        "us_per_blind": _mean_us(lambda i: curve.blind(point, scalar), reps),
    }


def main() -> None:
    """Parse arguments and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="ids per side")
    parser.add_argument("--overlap", type=float, default=0.5, help="fraction of ids in common")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    args = parser.parse_args()
    print(json.dumps(run(args.n, args.overlap, args.chunk_size), indent=2))


if __name__ == "__main__":
    main()
