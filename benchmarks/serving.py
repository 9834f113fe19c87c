"""Latency and throughput of E's recommendation service, and the cost of a refresh.

Usage: python benchmarks/serving.py [--datasets synthetic,movielens-100k] [--requests 1000]
           [--concurrency 4] [--refresh-users 1000] [--refresh-bits 2048] [--skip-refresh]

Per dataset: writes the data, a dev PKI and a 512-bit, one-epoch job; trains it with the
real processes (``vfl coordinator``, ``vfl party`` x 2); then starts the coordinator, ``vfl
serve`` at P and ``vfl serve`` at E, waits for the first refresh, and sends ``--requests``
``GET /recommend`` (top-10 over the whole catalogue, unseen items) from ``--concurrency``
threads, each with its own keep-alive HTTPS client (httpx), after 50 warm-up requests. The
key size does not enter a request (no crypto per request), so 512-bit training is enough.

Refresh: the time of the service's first refresh (real processes, 512 bits) and, in one
process over the in-memory channel (no gRPC), the encrypted forward of ``--refresh-users``
users at ``--refresh-bits`` bits (fresh keys, setup excluded), which is what a refresh does.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _data(dataset: str, data: Path, *, users: int) -> None:
    from vfl.data.movielens import convert_movielens
    from vfl.data.synthetic_writer import generate_synthetic

    if dataset == "synthetic":
        generate_synthetic(data, users=users, items=1682, overlap=0.8, seed=5)
    else:
        convert_movielens(data)


def _job(data: Path, *, bits: int, users_per_step: int) -> None:
    from vfl.data.party_files import dumps_toml

    job = data / "job.toml"
    table = tomllib.loads(job.read_text())
    table.setdefault("train", {}).update(
        {"epochs": 1, "key_bits": bits, "users_per_step": users_per_step}
    )
    job.write_text(dumps_toml(table))
    for name in ("e_party.toml", "p_party.toml"):
        party = tomllib.loads((data / name).read_text())
        party["party"]["min_key_bits"] = min(bits, 512)
        (data / name).write_text(dumps_toml(party))


def _configs(root: Path) -> tuple[dict[str, Path], str, Path, str]:
    """Dev PKI, network configs, E's [serving] section; (files, url, ca, token)."""
    from vfl.cli.netconfig import NetworkLayout, write_network_configs
    from vfl.transport.certs import generate_dev_pki
    from vfl.transport.sealing import write_box_keys

    data, certs = root / "data", root / "certs"
    files = {"e": data / "e_party.toml", "p": data / "p_party.toml"}
    e, p = (tomllib.loads(files[k].read_text())["party"]["name"] for k in ("e", "p"))
    generate_dev_pki(certs, parties=[e, p], services=[e])
    for name in (e, p):
        write_box_keys(certs, name)
    layout = NetworkLayout(certs, (e, p), port=_free_port(), job_file=data / "job.toml")
    written = write_network_configs(layout, {e: files["e"], p: files["p"]})
    token, port = secrets.token_urlsafe(32), _free_port()
    (root / "token").write_text(token + "\n")
    files["e"].write_text(
        files["e"].read_text()
        + f'\n[serving]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{certs / f"{e}-https.pem"}"\n'
        f'tls_key = "{certs / f"{e}-https.key"}"\ntoken_file = "{root / "token"}"\n'
    )
    return (
        {**files, "coordinator": written["coordinator"]},
        f"https://127.0.0.1:{port}",
        certs / "ca.pem",
        token,
    )


class Procs:
    """``python -m vfl`` processes with their logs."""

    def __init__(self, root: Path) -> None:
        self.root, self.procs = root, {}  # type: dict[str, subprocess.Popen[bytes]]

    def start(self, name: str, *args: str) -> None:
        log = (self.root / f"{name}.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "vfl", *args], stdout=log, stderr=subprocess.STDOUT, env=env
        )

    def wait_log(self, name: str, words: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while words not in (self.root / f"{name}.log").read_text(errors="replace"):
            if time.monotonic() > deadline or self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} never logged {words!r}: see {self.root / name}.log")
            time.sleep(0.1)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def _train(p: Procs, files: dict[str, Path]) -> float:
    started = time.monotonic()
    p.start("coordinator", "coordinator", "--config", str(files["coordinator"]))
    p.wait_log("coordinator", "listening on", 60)
    for k in ("p", "e"):
        p.start(k, "party", "--config", str(files[k]), "--out", str(p.root / k))
    for k in ("e", "p"):
        if p.procs[k].wait(timeout=3600) != 0:
            raise RuntimeError(f"training failed: see {p.root / k}.log")
    p.stop("coordinator")
    return time.monotonic() - started


def _load(url: str, ca: Path, token: str, users: list[str], n: int, threads: int) -> dict[str, Any]:
    """``n`` top-10 requests from ``threads`` keep-alive clients: latencies and rate."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker(count: int, seed: int) -> None:
        rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, verify=str(ca), headers=headers, timeout=30) as client:
            mine = []
            for _ in range(count):
                t0 = time.perf_counter()
                r = client.get("/recommend", params={"user": rng.choice(users), "k": 10})
                mine.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(r.text[:200])
            with lock:
                latencies.extend(mine)

    worker(50, 0)  # warm-up
    latencies.clear()
    per = [n // threads + (1 if t < n % threads else 0) for t in range(threads)]
    pool = [threading.Thread(target=worker, args=(c, t + 1)) for t, c in enumerate(per)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "concurrency": threads,
        "errors": len(errors),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def serve_dataset(dataset: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train, start the services, measure ``/recommend``."""
    _data(dataset, root / "data", users=args.synthetic_users)
    _job(root / "data", bits=512, users_per_step=64)
    files, url, ca, token = _configs(root)
    p = Procs(root)
    try:
        train_s = _train(p, files)
        p.start("coordinator", "coordinator", "--config", str(files["coordinator"]))
        p.wait_log("coordinator", "listening on", 60)
        p.start("ps", "serve", "--config", str(files["p"]), "--model", str(root / "p/model"))
        p.start("es", "serve", "--config", str(files["e"]), "--model", str(root / "e/model"))
        p.wait_log("es", "refreshed z_B of", 600)
        health = httpx.get(f"{url}/healthz", verify=str(ca)).json()
        from vfl.party.export import load_shard

        shard = load_shard(root / "e" / "model", "active")
        users = shard.alignment().ids.astype(str).tolist()
        load = _load(url, ca, token, users, args.requests, args.concurrency)
    finally:
        p.stop_all()
    return {
        "train_512_bits_s": round(train_s, 1),
        "aligned_users": health["cached_users"],
        "first_refresh_512_bits_s": health["last_refresh_s"],
        "catalogue_items": health["items"],
        "recommend_top10": load,
    }


def refresh_cost(users: int, bits: int) -> dict[str, Any]:
    """The encrypted forward of ``users`` users at ``bits`` bits, in one process."""
    from vfl.protocol.endpoint import Endpoint
    from vfl.training.compare import prepare, secure_model, secure_server
    from vfl.transport.channel import InMemoryChannel

    data = Path(tempfile.mkdtemp(prefix="vfl-refresh-")) / "data"
    _data("synthetic", data, users=int(users / 0.8) + 50)
    _job(data, bits=bits, users_per_step=64)
    prep = prepare(data / "job.toml")
    e_end, p_end = InMemoryChannel.pair("active", "passive")
    server = secure_server(prep, Endpoint(p_end, job_id="bench", timeout=600))
    threading.Thread(target=server.serve, daemon=True).start()
    model = secure_model(prep, Endpoint(e_end, job_id="bench", timeout=600))
    model.peer.setup()
    everyone = np.arange(min(users, len(prep.alignment.ids)), dtype=np.int64)
    started = time.perf_counter()
    for step, at in enumerate(range(0, len(everyone), 512)):
        model.peer.forward(step, everyone[at : at + 512], train=False)
    seconds = time.perf_counter() - started
    model.peer.shutdown(step=10**6)
    model.peer.share.close()
    return {
        "users": len(everyone),
        "key_bits": bits,
        "seconds": round(seconds, 2),
        "seconds_per_1000_users": round(seconds * 1000 / len(everyone), 2),
        "where": "one process, in-memory channel (no gRPC), setup excluded",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="synthetic,movielens-100k")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--synthetic-users", type=int, default=1000)
    parser.add_argument("--refresh-users", type=int, default=1000)
    parser.add_argument("--refresh-bits", type=int, default=2048)
    parser.add_argument("--skip-refresh", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"load_average": os.getloadavg()[0]}
    base = Path(tempfile.mkdtemp(prefix="vfl-serving-"))
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        (base / dataset).mkdir()
        out[dataset] = serve_dataset(dataset, base / dataset, args)
        print(json.dumps({dataset: out[dataset]}), file=sys.stderr, flush=True)
    if not args.skip_refresh:
        out["refresh"] = refresh_cost(args.refresh_users, args.refresh_bits)
    out["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
