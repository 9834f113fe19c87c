"""Cost from 1k to 10M users: encrypted epochs and PSI on the local pool and on Ray; JSON out.

Usage: ``python benchmarks/scale.py [--sizes 1000,10000] [--psi-sizes 1000000]
[--executors local,ray] [--cpus 2] [--bits 2048] [--randomness full|short_exponent]
[--psi-ids stream|list] [--profile-psi] [--out FILE]``; ``--sizes ""`` skips training.

1. **PSI profile** (``--profile-psi``): CPU microseconds per id of each step of one party's
   work, on 20,000 ids in this process -- hashing to the curve (SHA-512 + Elligator 2),
   one X25519 scalar multiplication, the validity check of a peer point, serialisation --
   and the intersection itself (sort + search) on ``max(psi-sizes)`` random 32-byte values.
   The op-count model of one party is ``hash + 2·mult + check`` per id.
2. **Encrypted training** for each size in ``--sizes``: synthetic data with that many users,
   all shared (the same items per user at every size), ``--bits`` Paillier keys, the job's
   defaults (32 users a step), one epoch, re-randomising with ``--randomness`` (``full``, the
   default, or ``short_exponent``: the many-base obfuscators, within 2^-128 of uniform whatever
   the key's owner knows, :mod:`vfl.crypto.randomness`; both floors then allow it, as two
   parties' ``[party] allow_short_exponent = true`` would). Both parties run in one spawned
   process (P in a thread, as ``benchmarks/protocol.py``) on one executor of ``--cpus``
   workers: the local process pool or a Ray cluster started on loopback. Reported: wall and CPU
   seconds of the epoch (the process and every live descendant: pool workers, Ray's workers and
   daemons), and peak RSS (``VmHWM``) of the process and of its largest descendant.
3. **PSI** for each size in ``--psi-sizes``: E and P as two spawned processes over a pipe,
   ``n`` ids each, half shared, each with its own executor (its own local pool or its own Ray
   cluster of ``--cpus`` CPUs), with a work directory; the ids reach :func:`run_psi` as a
   generator (``--psi-ids stream``, default: as a party streaming its user file) or as a
   prebuilt list of strings (``list``). Wall, CPU seconds per party
   (process + descendants) and peak RSS per party process.
4. **Fits and projection**: least squares of epoch CPU seconds on users (with R²) and of PSI
   CPU seconds per party on ids; projected hours per epoch and PSI minutes for 10M and 100M
   users on 64 and 512 cores per party, assuming each party's Paillier and curve work spreads
   evenly over its cores (the parties alternate, so an epoch's wall is the sum of both
   parties' CPU over one party's cores), the measured per-user cost at the default model
   (``d = h = 16``: one ciphertext per row), no network bound (an epoch moves about 2 KB per
   user and step exchange at 2048 bits) and the same 32 users a step.

Each measurement runs in a fresh spawned process, so peak RSS is that measurement's own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from psi import PipeLink, _id_stream, _ids

from vfl.config.party import IdRule, Role
from vfl.executor import ExecutorKind, ExecutorSpec, open_party_executor

_CLK = os.sysconf("SC_CLK_TCK")
SECRETFLOW_CORE_S_PER_PARTY_10M = 114 * 8  # 10M x 10M ECDH-PSI in 114 s on 8 cores a party
GIB = 1024**3


def _spec(kind: str, cpus: int) -> ExecutorSpec:
    return ExecutorSpec(kind=ExecutorKind(kind), address="local", num_cpus=cpus)


def _tree() -> dict[int, tuple[float, int]]:
    """``pid -> (CPU s, VmHWM KiB)`` of this process and its live descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    mine, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parents.items() if p == pid and c not in mine]
        mine.update(kids)
        frontier.extend(kids)
    return {pid: usage for pid in mine if (usage := _usage(pid)) is not None}


def _usage(pid: int) -> tuple[float, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    hwm = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0
    )
    return (int(fields[11]) + int(fields[12])) / _CLK, hwm


def _cpu_since(before: dict[int, tuple[float, int]]) -> float:
    """CPU seconds the process tree spent since ``before`` (new processes from zero)."""
    now = _tree()
    return sum(cpu - before.get(pid, (0.0, 0))[0] for pid, (cpu, _) in now.items())


def _rss(tree: dict[int, tuple[float, int]]) -> dict[str, float]:
    own = tree.get(os.getpid(), (0.0, 0))[1]
    others = [hwm for pid, (_, hwm) in tree.items() if pid != os.getpid()]
    return {
        "process_mib": round(own / 1024, 1),
        "largest_descendant_mib": round(max(others, default=0) / 1024, 1),
    }


# ---- 2. encrypted training ----------------------------------------------------------------


def _train_child(
    users: int, kind: str, cpus: int, bits: int, randomness: str, out: Connection
) -> None:
    """One encrypted epoch on ``users`` synthetic users; sends the report to ``out``."""
    from dataclasses import replace

    import torch

    from vfl.data.synthetic_writer import generate_synthetic
    from vfl.protocol.endpoint import Endpoint
    from vfl.protocol.options import SecurityFloor
    from vfl.training.compare import prepare, secure_model, secure_server
    from vfl.training.inputs import UserBatcher
    from vfl.transport.channel import InMemoryChannel

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        generate_synthetic(Path(folder), users=users, overlap=1.0, seed=7)
        prep = prepare(Path(folder) / "job.toml")
    from vfl.protocol.options import Randomness

    mode = Randomness(randomness)
    train = prep.job.train.model_copy(update={"key_bits": bits, "randomness": mode})
    floor = SecurityFloor(min_key_bits=bits, allow_short_exponent=mode is Randomness.SHORT_EXPONENT)
    prep = replace(prep, job=prep.job.model_copy(update={"train": train}), floors=(floor, floor))
    with open_party_executor(_spec(kind, cpus), owner="E and P") as executor:
        e_end, p_end = InMemoryChannel.pair("active", "passive")
        server = secure_server(prep, Endpoint(p_end, job_id="scale", timeout=3600), executor)
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        model = secure_model(prep, Endpoint(e_end, job_id="scale", timeout=3600), executor)
        model.peer.setup()
        model.peer.share.wait_ready()
        server.share.wait_ready()
        batcher = UserBatcher(prep.split, users_per_step=train.users_per_step,
                              negatives_per_positive=train.negatives_per_positive)  # fmt: skip
        rng, losses = np.random.default_rng(prep.job.job.seed), []
        e_counts = _snapshot(model.peer.share.counts())
        p_counts = _snapshot(server.share.counts())
        before, start = _tree(), time.perf_counter()
        for step, batch in enumerate(batcher.epoch(rng)):
            losses.append(model.train_step(step, batch))
        wall, cpu, tree = time.perf_counter() - start, _cpu_since(before), _tree()
        model.peer.shutdown(step=10**9)
        thread.join(timeout=60)
        model.peer.share.close()
        server.share.close()
    out.send({
        "users": len(prep.alignment), "executor": kind, "randomness": randomness,
        "steps": len(losses),
        "epoch_s": round(wall, 2), "epoch_cpu_s": round(cpu, 2),
        "cpu_ms_per_user": round(1e3 * cpu / len(prep.alignment), 3),
        "mean_loss": round(float(np.mean(losses)), 6), "peak_rss": _rss(tree),
        "items": prep.split.n_items, "train_positives": len(prep.split.train_items),
        "op_counts": {"E": _since(e_counts, model.peer.share.counts()),
                      "P": _since(p_counts, server.share.counts())},
    })  # fmt: skip


def _snapshot(counts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """JSON-ready copy of a party's Paillier op counts (per key)."""
    return {key: c.as_dict() for key, c in counts.items()}


def _since(before: dict[str, dict[str, Any]], now: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Op counts of the epoch: ``now`` minus the snapshot ``before`` (setup's own ops)."""
    out: dict[str, dict[str, Any]] = {}
    for key, counts in _snapshot(now).items():
        old = before.get(key, {})
        out[key] = {
            name: (
                {b: n - old.get(name, {}).get(b, 0) for b, n in value.items()}
                if isinstance(value, dict)
                else value - old.get(name, 0)
            )
            for name, value in counts.items()
        }
    return out


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    """Run ``target(*args, conn)`` in a fresh spawned process; its report."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, send))
    proc.start()
    while not receive.poll(5):
        if not proc.is_alive():
            raise RuntimeError(f"{target.__name__}{args} died with exit code {proc.exitcode}")
    report: dict[str, Any] = receive.recv()
    proc.join(timeout=120)
    return report


# ---- 3. PSI -------------------------------------------------------------------------------


def _psi_party(
    role: Role, conn: Connection, barrier: Barrier, out: Connection, args: dict[str, Any]
) -> None:
    """One party: its own executor, ids, barrier, PSI with its own work dir, report."""
    from vfl.config.job import PsiCurve
    from vfl.psi.protocol import DEFAULT_CHUNK_SIZE, PsiOptions, run_psi

    name = "E" if role is Role.ACTIVE else "P"
    spec = _spec(args["kind"], args["cpus"])
    with tempfile.TemporaryDirectory() as work, open_party_executor(spec, owner=name) as ex:
        for warm in [ex.executor.submit(time.sleep, 0.2) for _ in range(2 * ex.executor.workers)]:
            warm.result()  # workers started before the barrier
        ids = (
            _ids(role, args["n"], 0.5)
            if args["ids"] == "list"
            else _id_stream(role, args["n"], 0.5)
        )
        options = PsiOptions(curve=PsiCurve.X25519, chunk_size=DEFAULT_CHUNK_SIZE,
                             timeout=1800.0, executor=ex.executor, work_dir=Path(work))  # fmt: skip
        barrier.wait()
        before, start = _tree(), time.perf_counter()
        result = run_psi(PipeLink(conn, "P" if name == "E" else "E"), ids, job_id="scale",
                         role=role, rule=IdRule(), party=name, options=options)  # fmt: skip
        seconds, cpu, tree = time.perf_counter() - start, _cpu_since(before), _tree()
    out.send({"party": name, "seconds": seconds, "cpu_s": cpu, "n_common": result.n_common,
              "digest": result.alignment_digest, "peak_rss": _rss(tree)})  # fmt: skip


def run_psi_pair(n: int, kind: str, cpus: int, ids: str = "stream") -> dict[str, Any]:
    """Both parties as processes, ``n`` ids each, 50% overlap: wall, CPU, RSS per party.

    ``ids``: ``stream`` hands :func:`run_psi` a generator (a party reading its user file),
    ``list`` a list of ``n`` strings built first (which the party process then also holds,
    about 72 bytes an id)."""
    ctx = multiprocessing.get_context("spawn")
    link_e, link_p = ctx.Pipe(duplex=True)
    results_in, results_out = ctx.Pipe(duplex=False)
    barrier = ctx.Barrier(3)
    args = {"n": n, "kind": kind, "cpus": cpus, "ids": ids}
    procs = [ctx.Process(target=_psi_party, args=(role, link, barrier, results_out, args))
             for role, link in ((Role.ACTIVE, link_e), (Role.PASSIVE, link_p))]  # fmt: skip
    for proc in procs:
        proc.start()
    barrier.wait()
    start, reports = time.perf_counter(), {}
    for _ in procs:
        if not results_in.poll(7200):
            raise TimeoutError("a PSI party did not finish within 2 hours")
        report = results_in.recv()
        reports[report["party"]] = report
    wall = time.perf_counter() - start
    for proc in procs:
        proc.join(timeout=120)
    if reports["E"]["digest"] != reports["P"]["digest"]:
        raise RuntimeError("the two parties disagree on the aligned intersection")
    return {
        "ids_per_party": n, "executor": kind, "ids_input": ids, "wall_s": round(wall, 2),
        "n_common": reports["E"]["n_common"],
        "cpu_s_per_party": {k: round(r["cpu_s"], 2) for k, r in sorted(reports.items())},
        "cpu_us_per_id_per_party": round(
            1e6 * max(r["cpu_s"] for r in reports.values()) / n, 2),
        "peak_rss_per_party": {k: r["peak_rss"] for k, r in sorted(reports.items())},
    }  # fmt: skip


# ---- 1. PSI profile ------------------------------------------------------------------------


def profile_psi(n_sort: int) -> dict[str, float]:
    """CPU microseconds per id of each PSI step (see the module docstring, step 1)."""
    from vfl.psi import curve, x25519

    ids = [f"user-{i:09d}" for i in range(20_000)]
    scalar, tag = x25519.random_scalar(), x25519.domain_tag("scale")

    def per_id(fn: Any, count: int) -> tuple[float, Any]:
        start = time.process_time()
        value = fn()
        return 1e6 * (time.process_time() - start) / count, value

    hash_us, points = per_id(lambda: x25519.hash_many(ids, tag), len(ids))
    mult_us, blinded = per_id(lambda: x25519.blind_many(points, scalar), len(ids))
    check_us, _ = per_id(lambda: [x25519.is_valid_point(p) for p in blinded], len(ids))
    serial_us, _ = per_id(lambda: curve.split(b"".join(blinded)), len(ids))
    values = np.frombuffer(os.urandom(32 * n_sort), dtype="S32")
    sort_us, ordered = per_id(lambda: np.sort(values), n_sort)
    search_us, _ = per_id(lambda: np.searchsorted(ordered, values), n_sort)
    model = hash_us + 2 * mult_us + check_us
    return {
        "hash_to_curve_us": round(hash_us, 2), "x25519_mult_us": round(mult_us, 2),
        "peer_point_check_us": round(check_us, 2), "serialise_us": round(serial_us, 2),
        "intersection_sort_us": round(sort_us, 3), "intersection_search_us": round(search_us, 3),
        "op_count_model_us_per_id_per_party": round(model, 2), "sort_ids": n_sort,
    }  # fmt: skip


# ---- 4. fits and projection ------------------------------------------------------------------


def fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least squares ``y = a + b·x``: intercept, slope and R² (1.0 for two points)."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 2:
        return {"intercept": 0.0, "slope": float(y[0] / x[0]), "r2": float("nan")}
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = float(np.sum((y - y.mean()) ** 2))
    return {"intercept": float(intercept), "slope": float(slope),
            "r2": 1.0 - float(np.sum(residual**2)) / total if total else 1.0}  # fmt: skip


def projection(cpu_s_per_user: float | None, cpu_s_per_id: float | None) -> list[dict[str, Any]]:
    """Hours per epoch and PSI minutes for 10M and 100M users on 64 and 512 cores a party."""
    rows = []
    for users in (10_000_000, 100_000_000):
        for cores in (64, 512):
            row: dict[str, Any] = {"users": users, "cores_per_party": cores}
            if cpu_s_per_user is not None:
                row["epoch_hours"] = round(users * cpu_s_per_user / cores / 3600, 2)
            if cpu_s_per_id is not None:
                row["psi_minutes"] = round(users * cpu_s_per_id / cores / 60, 2)
            rows.append(row)
    return rows


def _sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=_sizes, default=[1000, 10000], help="training users")
    ap.add_argument("--psi-sizes", type=_sizes, default=[1_000_000], help="PSI ids per party")
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="workers per executor")
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--randomness", choices=("full", "short_exponent"), default="full")
    ap.add_argument("--psi-ids", choices=("stream", "list"), default="stream",
                    help="hand PSI a generator of ids (stream) or a prebuilt list")  # fmt: skip
    ap.add_argument("--profile-psi", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    kinds = [k for k in args.executors.split(",") if k]
    report: dict[str, Any] = {"cores": os.cpu_count(), "cpus_per_executor": args.cpus,
                              "bits": args.bits, "randomness": args.randomness,
                              "load_avg_before": os.getloadavg()}  # fmt: skip
    if args.profile_psi:
        report["psi_profile"] = profile_psi(max(args.psi_sizes, default=1_000_000))
    report["training"] = [_in_child(_train_child, n, k, args.cpus, args.bits, args.randomness)
                          for n in args.sizes for k in kinds]  # fmt: skip
    report["psi"] = [
        run_psi_pair(n, k, args.cpus, args.psi_ids) for n in args.psi_sizes for k in kinds
    ]
    report.update(summary(report, kinds))
    report["load_avg_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def summary(report: dict[str, Any], kinds: list[str]) -> dict[str, Any]:
    """Fits, Ray-over-local ratios, projection and the acceptance checks."""
    out: dict[str, Any] = {"fits": {}, "ray_over_local_wall": {}}
    base = "local" if "local" in kinds else kinds[0]
    train = [r for r in report["training"] if r["executor"] == base]
    psi = [r for r in report["psi"] if r["executor"] == base]
    per_user = per_id = None
    if train:
        out["fits"]["epoch_cpu_s_vs_users"] = fit([r["users"] for r in train],
                                                  [r["epoch_cpu_s"] for r in train])  # fmt: skip
        out["fits"]["epoch_wall_s_vs_users"] = fit([r["users"] for r in train],
                                                   [r["epoch_s"] for r in train])  # fmt: skip
        per_user = out["fits"]["epoch_cpu_s_vs_users"]["slope"]
    if psi:
        per_id = max(r["cpu_us_per_id_per_party"] for r in psi) / 1e6
        out["fits"]["psi_cpu_s_per_id_per_party"] = per_id
        out["psi_core_s_per_party_at_10M"] = round(per_id * 10_000_000, 1)
        out["secretflow_core_s_per_party_at_10M"] = SECRETFLOW_CORE_S_PER_PARTY_10M
    for table, key in (("training", "users"), ("psi", "ids_per_party")):
        wall = "epoch_s" if table == "training" else "wall_s"
        rows = {(r[key], r["executor"]): r[wall] for r in report[table]}
        for (size, kind), seconds in rows.items():
            if kind == "ray" and (size, "local") in rows:
                out["ray_over_local_wall"][f"{table}_{size}"] = round(
                    seconds / rows[(size, "local")], 3
                )
    out["projection"] = projection(per_user, per_id)
    out["projection_assumptions"] = (
        "each party's Paillier and curve work spreads evenly over its own cores; an epoch's "
        "wall is both parties' CPU over one party's cores (they alternate); per-user cost as "
        "measured at the default model and 32 users a step; network not limiting"
    )
    return out


if __name__ == "__main__":
    main()
