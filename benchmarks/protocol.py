"""Cost of the secret-shared interactive layer on MovieLens-100K, against its op-count model.

Usage: python benchmarks/protocol.py [--bits 2048] [--epochs 1] [--users-per-step 32]
           [--randomness full|short_exponent] [--inline-randomness] [--workers N]
           [--torch-threads 1] [--no-eval] [--no-plaintext] [--max-steps N]

Both parties run in this process (P in a thread) over the in-memory channel, with the job's
default model dimensions. For the encrypted protocol and then for plaintext mode (same
messages, no encryption, no masks) it trains ``--epochs`` epochs on the same batches and
prints one JSON object: seconds per step and per epoch, distinct users per step, the count
of every Paillier operation during training, the op-count model (each count times that
operation's cost measured in this run, single-threaded, r^n included) beside the measured
training time, HR@10 of the encrypted model, of plaintext mode and of the plaintext split
network (same initial weights) after the same epochs, and the load average during the run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
import torch

from vfl.crypto.paillier import KeyPair
from vfl.crypto.pool import randomness_source
from vfl.data.movielens import convert_movielens
from vfl.protocol.ciphers import OpCounts
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.initial_shares import initial_weight
from vfl.protocol.options import Mode, Randomness, SecurityFloor
from vfl.protocol.secure_layer import initial_factor, initial_rotation
from vfl.training.compare import (
    Prepared,
    passive_server,
    plain_model,
    prepare,
    secure_model,
    secure_server,
)
from vfl.training.inputs import UserBatcher
from vfl.training.loop import evaluate
from vfl.training.secure import layer_settings
from vfl.transport.channel import InMemoryChannel


def load_movielens(users_per_step: int, mode: Mode, args: argparse.Namespace) -> Prepared:
    """MovieLens-100K as both parties see it, with this benchmark's training settings."""
    folder = Path(tempfile.mkdtemp(prefix="vfl-bench-"))
    convert_movielens(folder)
    prep = prepare(folder / "job.toml")
    train = prep.job.train.model_copy(
        update={
            "users_per_step": users_per_step,
            "protocol": mode,
            "key_bits": args.bits,
            "randomness": Randomness(args.randomness),
            "precompute_randomness": not args.inline_randomness,
            "crypto_workers": args.workers,
        }
    )
    job = prep.job.model_copy(update={"train": train})
    # Plaintext mode, a short key or short-exponent re-randomisation needs both parties'
    # consent in their own configs; this benchmark gives it for its own run.
    floor = SecurityFloor(
        min_key_bits=args.bits, allow_short_exponent=args.randomness == "short_exponent"
    )
    return replace(
        prep, job=job, allow_plaintext=(mode is Mode.PLAINTEXT,) * 2, floors=(floor, floor)
    )


def _train(
    model: Any, prep: Prepared, args: argparse.Namespace
) -> tuple[list[list[float]], list[int]]:
    """Train ``args.epochs`` epochs on user-drawn batches; per-step seconds and users."""
    t = prep.job.train
    batcher = UserBatcher(
        prep.split, users_per_step=t.users_per_step, negatives_per_positive=t.negatives_per_positive
    )
    rng, step, epochs, users = np.random.default_rng(prep.job.job.seed), 0, [], []
    for _ in range(args.epochs):
        times = []
        for batch in batcher.epoch(rng):
            if args.max_steps and step >= args.max_steps:
                break
            t0 = time.perf_counter()
            model.train_step(step, batch)
            times.append(time.perf_counter() - t0)
            users.append(len(np.unique(batch.users)))
            step += 1
        epochs.append(times)
    return epochs, users


def _timing(epochs: list[list[float]], users: list[int], prep: Prepared) -> dict[str, Any]:
    steps = sum(len(e) for e in epochs)
    train_s = sum(sum(e) for e in epochs)
    return {
        "steps": steps,
        "users_per_step_config": prep.job.train.users_per_step,
        "distinct_users_per_step": {
            "mean": round(float(np.mean(users)), 2),
            "min": int(np.min(users)),
            "max": int(np.max(users)),
        },
        "users_per_epoch": int(sum(users) // max(1, len(epochs))),
        "seconds_per_step": round(train_s / max(steps, 1), 4),
        "seconds_per_epoch": [round(sum(e), 2) for e in epochs],
        "train_seconds": round(train_s, 2),
    }


def run_mode(mode: Mode, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``args.epochs`` epochs in ``mode``: times, op counts (training), HR@10."""
    prep = load_movielens(args.users_per_step, mode, args)
    torch.manual_seed(prep.job.job.seed)
    e_end, p_end = InMemoryChannel.pair("active", "passive")
    t0 = time.perf_counter()
    server = secure_server(prep, Endpoint(p_end, job_id="bench", timeout=600))
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    model = secure_model(prep, Endpoint(e_end, job_id="bench", timeout=600))
    model.peer.setup()
    model.peer.share.wait_ready()  # r^n is precomputed ahead (SPEC §4): start with full pools
    server.share.wait_ready()
    out: dict[str, Any] = {"setup_seconds": round(time.perf_counter() - t0, 2)}
    epochs, users = _train(model, prep, args)
    shares = [*model.peer.share.counts().values(), *server.share.counts().values()]
    out.update(_timing(epochs, users, prep))
    out["op_counts_by_party"] = {
        "E": {k: v.as_dict() for k, v in model.peer.share.counts().items()},
        "P": {k: v.as_dict() for k, v in server.share.counts().items()},
    }
    out["_totals"] = copy.deepcopy(_sum_counts(shares))
    if args.eval:
        t0 = time.perf_counter()
        step = out["steps"]
        out["test"] = evaluate(model, prep.split.test, step=step, k=prep.job.eval.k).as_dict()
        out["eval_seconds"] = round(time.perf_counter() - t0, 2)
    model.peer.shutdown(step=10**9)
    thread.join(timeout=60)
    model.peer.share.close()
    server.share.close()
    return out


def run_plain_split(args: argparse.Namespace) -> dict[str, Any]:
    """The plaintext split network (``b`` in the clear, E holds ``W_B``), same initial weights.

    ``W_B`` starts at the encrypted run's ``W_B(0) = Q·G`` (same seeds), so after the same
    epochs it is the same model up to the fixed-point error.
    """
    prep = load_movielens(args.users_per_step, Mode.ENCRYPTED, args)
    torch.manual_seed(prep.job.job.seed)
    e_end, p_end = InMemoryChannel.pair("active", "passive")
    server = passive_server(prep, Endpoint(p_end, job_id="bench", timeout=600))
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    model = plain_model(prep, Endpoint(e_end, job_id="bench", timeout=600))
    cfg, seed = prep.job.model, prep.job.job.seed
    scales = layer_settings(prep.job.train).scales
    d, h = cfg.passive_out, cfg.interactive_out
    q = initial_rotation(d, scales, np.random.default_rng(seed))
    g = initial_factor(d, h, scales, np.random.default_rng(seed + 1))
    with torch.no_grad():
        model.w_b.weight.copy_(torch.tensor(initial_weight(q, g, scales)))
    epochs, users = _train(model, prep, args)
    out = _timing(epochs, users, prep)
    step = out["steps"]
    if args.eval:
        out["test"] = evaluate(model, prep.split.test, step=step, k=prep.job.eval.k).as_dict()
    model.peer.shutdown(step=step)
    thread.join(timeout=60)
    return out


def _sum_counts(parts: list[OpCounts]) -> OpCounts:
    total = OpCounts()
    for c in parts:
        total.encryptions += c.encryptions
        total.decryptions += c.decryptions
        total.rerandomisations += c.rerandomisations
        total.ciphertext_adds += c.ciphertext_adds
        total.plaintext_adds += c.plaintext_adds
        total.products += c.products
        for bits, n in c.scalar_mults.items():
            total.scalar_mults[bits] = total.scalar_mults.get(bits, 0) + n
    return total


def _per_call(fn: Callable[[], object], repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def op_costs(bits: int, scalar_bits: list[int], rerandomise: Randomness) -> dict[str, float]:
    """Seconds per Paillier operation at ``bits``, measured now, single-threaded, inline.

    Encryption is a party's fresh encryption under its own key (OWNER_CRT obfuscator);
    re-randomisation uses ``rerandomise``, as the protocol does.
    """
    kp = KeyPair.generate(bits)
    pk, n2 = kp.public_key, kp.public_key.nsquare
    own = randomness_source(pk, Randomness.OWNER_CRT, private_key=kp.private_key)
    other = randomness_source(pk, rerandomise)
    c = gmpy2.mpz(pk.raw_encrypt(secrets.randbelow(pk.n)))
    m = gmpy2.mpz(1 + pk.n * secrets.randbelow(pk.n)) % n2
    costs = {
        "encryption": _per_call(lambda: pk.raw_encrypt(12345, r_pow_n=own.take(1)[0]), 30),
        "decryption": _per_call(lambda: kp.private_key.raw_decrypt(int(c)), 30),
        "rerandomisation": _per_call(lambda: pk.rerandomise(int(c), r_pow_n=other.take(1)[0]), 30),
        "ciphertext_add": _per_call(lambda: c * c % n2, 3000),
        "plaintext_add": _per_call(lambda: c * m % n2, 3000),
    }
    for b in scalar_bits:
        e = secrets.randbits(b) | (1 << (b - 1))
        costs[f"scalar_mult_{b}"] = _per_call(lambda e=e: gmpy2.powmod(c, e, n2), 300)
    return costs


def op_model(counts: OpCounts, costs: dict[str, float]) -> dict[str, float]:
    """Seconds each kind of operation should take: count x measured cost."""
    model = {
        "encryptions": counts.encryptions * costs["encryption"],
        "decryptions": counts.decryptions * costs["decryption"],
        "rerandomisations": counts.rerandomisations * costs["rerandomisation"],
        "ciphertext_adds": counts.ciphertext_adds * costs["ciphertext_add"],
        "plaintext_adds": counts.plaintext_adds * costs["plaintext_add"],
    }
    for b, n in counts.scalar_mults.items():
        model[f"scalar_mults_{b}"] = n * costs[f"scalar_mult_{b}"]
    return {k: round(v, 3) for k, v in model.items()}


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--users-per-step", type=int, default=32)
    ap.add_argument(
        "--randomness", choices=["full", "short_exponent"], default="full", help="re-randomisation"
    )
    ap.add_argument("--inline-randomness", action="store_true", help="no background pools")
    ap.add_argument("--workers", type=int, default=0, help="kernel processes per party")
    ap.add_argument("--max-steps", type=int, default=0, help="stop early (profiling)")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--no-eval", dest="eval", action="store_false")
    ap.add_argument("--no-plaintext", dest="plaintext", action="store_false")
    return ap.parse_args()


def run_encrypted(args: argparse.Namespace) -> dict[str, Any]:
    """The encrypted run with its op-count model (costs measured before and after it)."""
    rerandomise, widths = Randomness(args.randomness), [21, 35]  # b_bits + 1, d_bits + 5
    before = op_costs(args.bits, widths, rerandomise)
    enc = run_mode(Mode.ENCRYPTED, args)
    after = op_costs(args.bits, widths, rerandomise)
    totals: OpCounts = enc.pop("_totals")
    enc["op_counts"] = totals.as_dict()
    # the machine may be shared: costs measured just before and just after training, averaged
    costs = {k: (before[k] + after[k]) / 2 for k in before}
    model = op_model(totals, costs)
    enc["op_cost_ms"] = {k: round(v * 1e3, 4) for k, v in costs.items()}
    enc["op_cost_ms_before_after"] = {
        k: [round(before[k] * 1e3, 4), round(after[k] * 1e3, 4)] for k in before
    }
    enc["op_count_model_seconds"] = model
    enc["op_count_model_total_seconds"] = round(sum(model.values()), 2)
    enc["measured_over_model"] = round(enc["train_seconds"] / max(sum(model.values()), 1e-9), 3)
    return enc


def main() -> None:
    args = _args()
    # The layer's tensors are small; torch's intra-op threads would only spin against the
    # randomness pools and the other party for the two cores (measured: 5x slower steps).
    torch.set_num_threads(args.torch_threads)
    load = [os.getloadavg()]
    enc = run_encrypted(args)
    load.append(os.getloadavg())
    report: dict[str, Any] = {"dataset": "movielens-100k", "bits": args.bits, "encrypted": enc}
    if args.plaintext:
        plain = run_mode(Mode.PLAINTEXT, args)
        plain.pop("_totals")
        report["plaintext_mode"] = plain
        report["encrypted_over_plaintext_epoch"] = round(
            enc["train_seconds"] / max(plain["train_seconds"], 1e-9), 1
        )
    split = run_plain_split(args)
    report["plaintext_split_network"] = split
    report["encrypted_over_plain_split_epoch"] = round(
        enc["train_seconds"] / max(split["train_seconds"], 1e-9), 1
    )
    if args.eval:
        hr = {"encrypted": enc["test"]["hr@10"], "plain_split": split["test"]["hr@10"]}
        if args.plaintext:
            hr["plaintext_mode"] = report["plaintext_mode"]["test"]["hr@10"]
        report["hr10"] = hr
        report["hr10_gap_vs_plain_split"] = round(abs(hr["encrypted"] - hr["plain_split"]), 4)
    load.append(os.getloadavg())
    report["load_average_1m"] = [round(x[0], 2) for x in load]
    report["cpu_count"] = os.cpu_count()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
