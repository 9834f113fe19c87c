"""End-to-end ECDH-PSI between two real party processes, against the bare curve bound; JSON out.

Usage: ``python benchmarks/psi.py [--ids 1000000] [--overlap 0.5] [--curve x25519]
[--chunk-size 4096] [--workers N]``

1. E and P run as two spawned OS processes joined by a pipe (the ``ByteLink``), each with its
   own local process pool (``--workers``, default every core) and its own work directory, so
   the run includes hashing, blinding, streaming, re-blinding, intersecting, aligning and
   persisting. ``ids`` per side, a fraction ``overlap`` in common. Both start on a barrier
   after generating their ids; ``wall_s`` runs from there until both have their result.
2. Each party reports its peak RSS (``getrusage``): the party process itself and its largest
   curve worker; and the CPU seconds of both parties with their workers (``cpu_s``), which
   with ``raw_bound_cpu_s`` gives an overhead ratio that other load on the machine does not
   distort as much as the wall-clock ratio. The pools are started before the barrier.
3. ``raw_bound_s``: the same number of scalar multiplications the protocol performs (``2·ids``
   per party: blind own, re-blind the peer's), as bare libsodium calls in a tight loop spread
   over every core -- how fast the curve operations alone could do the work on this machine.
   It leaves out hashing to the curve, checking the peer's points and everything else.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from vfl.config.job import PsiCurve
from vfl.config.party import IdRule, Role
from vfl.errors import ChannelTimeout
from vfl.executor import LocalProcessExecutor
from vfl.psi import curve as groups
from vfl.psi.protocol import DEFAULT_CHUNK_SIZE, PsiOptions, run_psi

_JOB = "bench-psi"


class PipeLink:
    """A ``ByteLink`` over one end of a ``multiprocessing.Pipe``."""

    def __init__(self, conn: Connection, peer: str) -> None:
        self._conn, self._peer = conn, peer

    def send(self, data: bytes) -> None:
        """Send one message."""
        self._conn.send_bytes(data)

    def recv(self, timeout: float) -> bytes:
        """Next message, or :class:`ChannelTimeout` after ``timeout`` seconds."""
        if not self._conn.poll(timeout):
            raise ChannelTimeout(f"no message from party '{self._peer}' within {timeout:.0f} s")
        return self._conn.recv_bytes()


def _ids(role: Role, n: int, overlap: float) -> list[str]:
    """E holds ``user-0 .. user-(n-1)``; P the ``n`` ids starting ``overlap·n`` before E's end."""
    start = 0 if role is Role.ACTIVE else n - int(n * overlap)
    return [f"user-{i:09d}" for i in range(start, start + n)]


def _id_stream(role: Role, n: int, overlap: float) -> Iterator[str]:
    """The ids of :func:`_ids`, generated one at a time (as a party reading its user file)."""
    start = 0 if role is Role.ACTIVE else n - int(n * overlap)
    return (f"user-{i:09d}" for i in range(start, start + n))


def _warm(seconds: float) -> tuple[int, float]:
    """Keep a worker busy briefly, so that every worker starts; its pid and CPU s so far."""
    time.sleep(seconds)
    return os.getpid(), time.process_time()


def _cpu_s(who: int) -> float:
    """User plus system CPU seconds of this process or of its reaped children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _party(
    role: Role, conn: Connection, barrier: Barrier, out: Connection, args: dict[str, Any]
) -> None:
    """One party process: pool, ids, barrier, PSI with its own work dir, report.

    The pool is started before the ids exist: a spawned worker's ``ru_maxrss`` would otherwise
    count the parent's pages at fork time, not the worker's own use.
    """
    name = "E" if role is Role.ACTIVE else "P"
    with tempfile.TemporaryDirectory() as work, LocalProcessExecutor(args["workers"]) as pool:
        started: dict[int, float] = {}
        for warm in [pool.submit(_warm, 0.3) for _ in range(2 * pool.workers)]:
            pid, cpu_so_far = warm.result()
            started[pid] = max(cpu_so_far, started.get(pid, 0.0))
        ids = _ids(role, args["ids"], args["overlap"])
        options = PsiOptions(
            curve=PsiCurve(args["curve"]),
            chunk_size=args["chunk_size"],
            timeout=600.0,
            executor=pool,
            work_dir=Path(work),
        )
        barrier.wait()
        cpu = _cpu_s(resource.RUSAGE_SELF)
        start = time.perf_counter()
        result = run_psi(
            PipeLink(conn, "P" if name == "E" else "E"), ids, job_id=_JOB, role=role,
            rule=IdRule(), party=name, options=options,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        cpu = _cpu_s(resource.RUSAGE_SELF) - cpu
    out.send(
        {
            "party": name,
            "seconds": seconds,
            # workers, reaped by now, less what they spent starting before the barrier
            "cpu_s": cpu + _cpu_s(resource.RUSAGE_CHILDREN) - sum(started.values()),
            "party_cpu_s": cpu,
            "n_common": result.n_common,
            "digest": result.alignment_digest,
            "rss_party_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }
    )


def run_parties(args: dict[str, Any]) -> dict[str, Any]:
    """Step 1 and 2: both parties as processes; wall time, agreement and memory."""
    ctx = multiprocessing.get_context("spawn")
    link_e, link_p = ctx.Pipe(duplex=True)
    results_in, results_out = ctx.Pipe(duplex=False)
    barrier = ctx.Barrier(3)
    procs = [
        ctx.Process(target=_party, args=(role, link, barrier, results_out, args))
        for role, link in ((Role.ACTIVE, link_e), (Role.PASSIVE, link_p))
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.perf_counter()
    reports = {}
    for _ in procs:
        if not results_in.poll(1800):
            raise TimeoutError("a party did not finish within 30 minutes")
        report = results_in.recv()
        reports[report["party"]] = report
    wall = time.perf_counter() - start
    for proc in procs:
        proc.join(timeout=60)
    if reports["E"]["digest"] != reports["P"]["digest"]:
        raise RuntimeError("the two parties disagree on the aligned intersection")
    return {
        "wall_s": round(wall, 2),
        "n_common": reports["E"]["n_common"],
        "party_seconds": {k: round(r["seconds"], 2) for k, r in sorted(reports.items())},
        "cpu_s": round(sum(r["cpu_s"] for r in reports.values()), 2),
        "party_process_cpu_s": {k: round(r["party_cpu_s"], 2) for k, r in sorted(reports.items())},
        "peak_rss_mib": {
            k: {
                "party": round(r["rss_party_mib"], 1),
                "largest_worker": round(r["rss_worker_mib"], 1),
            }
            for k, r in sorted(reports.items())
        },
    }


def _bare_mults(curve: str, count: int) -> tuple[float, float]:
    """``count`` bare scalar multiplications in a tight loop (one worker); wall and CPU s."""
    from nacl._sodium import ffi, lib

    group = PsiCurve(curve)
    points = [groups.hash_to_point(group, f"u{i}", _JOB) for i in range(256)]
    scalar = groups.random_scalar(group)
    if group is PsiCurve.X25519:
        mult = lib.crypto_scalarmult
    else:
        mult = lib.crypto_scalarmult_ed25519_noclamp
    buf = ffi.new("unsigned char[]", 32)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        mult(buf, scalar, points[i & 255])
    return time.perf_counter() - start, time.process_time() - cpu


def raw_bound(curve: str, operations: int, workers: int) -> tuple[float, float]:
    """Step 3: wall and CPU seconds of ``operations`` bare multiplications on ``workers``."""
    share = -(-operations // workers)
    with LocalProcessExecutor(workers) as pool:
        for warm in [pool.submit(_bare_mults, curve, 1) for _ in range(workers)]:
            warm.result()  # workers started and imports done before timing
        start = time.perf_counter()
        futures = [pool.submit(_bare_mults, curve, share) for _ in range(workers)]
        cpu = sum(future.result()[1] for future in futures)
        return time.perf_counter() - start, cpu


def main() -> None:
    """Parse arguments, run, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000, help="ids per party")
    parser.add_argument("--overlap", type=float, default=0.5, help="fraction of ids in common")
    parser.add_argument("--curve", choices=[c.value for c in PsiCurve], default="x25519")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="per party")
    args = vars(parser.parse_args())
    load_before = os.getloadavg()
    parties = run_parties(args)
    operations = 4 * args["ids"]
    bound, bound_cpu = raw_bound(args["curve"], operations, os.cpu_count() or 1)
    report = {
        "ids_per_party": args["ids"],
        "overlap": args["overlap"],
        "curve": args["curve"],
        "chunk_size": args["chunk_size"],
        "workers_per_party": args["workers"],
        "cores": os.cpu_count(),
        **parties,
        "ids_per_second": round(2 * args["ids"] / parties["wall_s"]),
        "scalar_mults": operations,
        "raw_bound_s": round(bound, 2),
        "ratio_to_raw_bound": round(parties["wall_s"] / bound, 3),
        "raw_bound_cpu_s": round(bound_cpu, 2),
        "cpu_ratio_to_raw_bound": round(parties["cpu_s"] / bound_cpu, 3),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
