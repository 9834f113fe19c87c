"""What a PSI checkpoint saves: a full PSI, then one killed half-way and resumed; JSON out.

Usage: ``python benchmarks/psi_resume.py [--ids 200000] [--overlap 0.5] [--at 0.5]
[--chunk-size 4096] [--workers N]``

1. ``full_s``: E and P as two spawned processes joined by a pipe, each with its own pool and
   fresh work directory, from a barrier until both hold the alignment (as ``psi.py``).
2. The same inputs in new work directories; E kills itself (``SIGKILL``) once it has sent a
   fraction ``--at`` of its singly-blinded set, P then loses its pipe and stops.
   ``killed_after_s`` is that first part.
3. Both restart on the same work directories: ``resumed_s`` until both hold the alignment,
   with the points each took from its checkpoint (``hash_resumed``, ``reblind_resumed``).
   The resumed alignment must equal across parties; ``redo_fraction = resumed_s / full_s``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from vfl.config.job import PsiCurve
from vfl.config.party import IdRule, Role
from vfl.errors import ChannelTimeout, PeerLost
from vfl.executor import LocalProcessExecutor
from vfl.psi.protocol import DEFAULT_CHUNK_SIZE, PsiOptions, run_psi

_JOB = "bench-psi-resume"


class _PipeLink:
    """A ``ByteLink`` over one end of a ``multiprocessing.Pipe`` (as in ``psi.py``)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def send(self, data: bytes) -> None:
        self._conn.send_bytes(data)

    def recv(self, timeout: float) -> bytes:
        if not self._conn.poll(timeout):
            raise ChannelTimeout(f"no PSI message within {timeout:.0f} s")
        try:
            return self._conn.recv_bytes()
        except EOFError:
            raise PeerLost("the other party's pipe closed (it was killed)") from None


def _ids(role: Role, n: int, overlap: float) -> list[str]:
    """E holds ``user-0 .. user-(n-1)``; P the ``n`` ids starting ``overlap·n`` before E's end."""
    start = 0 if role is Role.ACTIVE else n - int(n * overlap)
    return [f"user-{i:09d}" for i in range(start, start + n)]


def _party(
    role: Role, conn: Connection, barrier: Barrier, out: Connection, args: dict[str, Any],
    work: Path, kill_at: float | None,
) -> None:  # fmt: skip
    """One party process: pool, ids, barrier, PSI; E kills itself at ``kill_at`` if given."""
    name = "E" if role is Role.ACTIVE else "P"
    resumed = {"hash_resumed": 0, "reblind_resumed": 0}
    n = args["ids"]

    def progress(stage: str, done: int, total: int) -> None:
        if stage in resumed:
            resumed[stage] = done
        if kill_at is not None and name == "E" and stage == "send" and done >= kill_at * n:
            os.kill(os.getpid(), signal.SIGKILL)

    with LocalProcessExecutor(args["workers"]) as pool:
        pool.map(abs, list(range(2 * pool.workers)))  # workers started before the barrier
        ids = _ids(role, n, args["overlap"])
        options = PsiOptions(
            curve=PsiCurve.X25519, chunk_size=args["chunk_size"], timeout=600.0,
            executor=pool, work_dir=work, progress=progress,
        )  # fmt: skip
        barrier.wait()
        start = time.perf_counter()
        try:
            result = run_psi(
                _PipeLink(conn), ids, job_id=_JOB, role=role,
                rule=IdRule(), party=name, options=options,
            )  # fmt: skip
        except PeerLost as exc:
            print(f"{name}: {exc}; stopped, as a party does", file=sys.stderr)
            return
        seconds = time.perf_counter() - start
    out.send({"party": name, "seconds": seconds, "digest": result.alignment_digest, **resumed})


def _run(args: dict[str, Any], root: Path, kill_at: float | None) -> dict[str, Any]:
    """One PSI of both parties in ``root/{e,p}``; wall seconds and reports (none if killed)."""
    ctx = multiprocessing.get_context("spawn")
    link_e, link_p = ctx.Pipe(duplex=True)
    results_in, results_out = ctx.Pipe(duplex=False)
    barrier = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_party, args=(role, link, barrier, results_out, args, root / k, kill_at))
        for role, link, k in ((Role.ACTIVE, link_e, "e"), (Role.PASSIVE, link_p, "p"))
    ]
    for proc in procs:
        proc.start()
    link_e.close()  # the parties hold their own ends: E's death closes P's pipe
    link_p.close()
    barrier.wait()
    start = time.perf_counter()
    reports: dict[str, Any] = {}
    if kill_at is None:
        for _ in procs:
            if not results_in.poll(1800):
                raise TimeoutError("a party did not finish within 30 minutes")
            report = results_in.recv()
            reports[report["party"]] = report
    for proc in procs:
        proc.join(timeout=600)
    return {"wall_s": time.perf_counter() - start, "reports": reports}


def main() -> None:
    """Parse arguments, run the three PSIs, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=200_000, help="ids per party")
    parser.add_argument("--overlap", type=float, default=0.5, help="fraction of ids in common")
    parser.add_argument("--at", type=float, default=0.5, help="fraction sent when E is killed")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="per party")
    args = vars(parser.parse_args())
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as fresh, tempfile.TemporaryDirectory() as kept:
        full = _run(args, Path(fresh), None)
        killed = _run(args, Path(kept), args["at"])
        resumed = _run(args, Path(kept), None)
    if len({r["digest"] for r in resumed["reports"].values()}) != 1:
        raise RuntimeError("the resumed parties disagree on the aligned intersection")
    report = {
        "ids_per_party": args["ids"],
        "killed_at_fraction_sent": args["at"],
        "chunk_size": args["chunk_size"],
        "workers_per_party": args["workers"],
        "full_s": round(full["wall_s"], 2),
        "killed_after_s": round(killed["wall_s"], 2),
        "resumed_s": round(resumed["wall_s"], 2),
        "redo_fraction": round(resumed["wall_s"] / full["wall_s"], 3),
        "points_from_checkpoint": {
            k: {s: r[s] for s in ("hash_resumed", "reblind_resumed")}
            for k, r in sorted(resumed["reports"].items())
        },
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
