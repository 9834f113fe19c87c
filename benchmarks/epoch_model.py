"""The op-count model of one encrypted epoch against its measured CPU; JSON out.

Usage: ``python benchmarks/epoch_model.py [--users 1000] [--bits 2048] [--cpus 2]
[--randomness full|short_exponent] [--out FILE]``

1. One epoch exactly as ``benchmarks/scale.py`` runs it (synthetic data, all users shared,
   the job's defaults, E and P on one local pool of ``--cpus`` workers), with the Paillier
   operations of each party counted during the epoch only (setup excluded).
2. The cost of each operation at ``--bits``, measured in this process, single-threaded:
   a fresh encryption under one's own key (the owner's obfuscator for ``--randomness``,
   ``owner_mode``, as the layer does), a re-randomisation under the other party's key with
   ``--randomness`` (the obfuscator included: the pools compute it on the same cores), a
   CRT decryption, a plaintext add, and the batched product ``M·[[X]]``
   of :mod:`vfl.crypto.batched` at the layer's own shapes (per matrix entry and packed
   column, table building included).
3. The model: per user, each count times its cost, summed over both parties, beside the
   measured epoch CPU per user (both parties' processes and pool workers together).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import _in_child, _train_child

from vfl.crypto.batched import combine
from vfl.crypto.paillier import KeyPair
from vfl.crypto.pool import randomness_source
from vfl.crypto.randomness import Randomness, owner_mode


def _per_call(fn: Callable[[], object], repeat: int) -> float:
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t0) / repeat


def _product_cost(kp: KeyPair, bits: int, m: int, d: int) -> float:
    """CPU seconds per entry of ``M·[[X]]``, ``M`` m x d of ``bits``-bit signed entries."""
    pk = kp.public_key
    bases = [[pk.raw_encrypt(secrets.randbelow(pk.n))] for _ in range(d)]
    half = 1 << (bits - 1)
    mat = np.array(
        [[secrets.randbelow(2 * half) - half for _ in range(d)] for _ in range(m)], dtype=object
    )
    return _per_call(lambda: combine(bases, mat, pk.nsquare), 3) / (m * d)


def op_costs(bits: int, randomness: Randomness) -> dict[str, float]:
    """CPU seconds of each Paillier operation of the layer at ``bits`` (module docstring, 2)."""
    kp = KeyPair.generate(bits)
    pk, n2 = kp.public_key, kp.public_key.nsquare
    own = randomness_source(pk, owner_mode(randomness), private_key=kp.private_key)
    peer = randomness_source(pk, randomness)
    for source in (own, peer):
        source.take(1)  # a short-exponent source builds its table once per process
    c = gmpy2.mpz(pk.raw_encrypt(secrets.randbelow(pk.n)))
    m = gmpy2.mpz(1 + pk.n * secrets.randbelow(pk.n)) % n2
    width = (n2.bit_length() + 7) // 8
    body = b"".join(int(c).to_bytes(width, "big") for _ in range(256))
    return {
        "encryption_own": _per_call(lambda: pk.raw_encrypt(1, r_pow_n=own.take(1)[0]), 40),
        "rerandomisation": _per_call(lambda: pk.rerandomise(int(c), r_pow_n=peer.take(1)[0]), 20),
        "decryption_crt": _per_call(lambda: kp.private_key.raw_decrypt(int(c)), 40),
        "plaintext_add": _per_call(lambda: c * m % n2, 2000),
        # forward B·[[U]] and weight gradient Bᵀ·[[G]] (b_bits + 1), backward D·[[Vᵀ]]
        "product_21_m32": _product_cost(kp, 21, 32, 16),
        "product_21_m16": _product_cost(kp, 21, 16, 32),
        "product_35_m32": _product_cost(kp, 35, 32, 16),
        "serde_per_ciphertext": _per_call(
            lambda: [
                int.from_bytes(body[i : i + width], "big") for i in range(0, len(body), width)
            ],
            20,
        )
        / 256,
    }


def model_rows(report: dict[str, Any], costs: dict[str, float]) -> list[dict[str, Any]]:
    """Per user: each counted operation times its cost, for both parties."""
    users, rows, mode = report["users"], [], Randomness(report["randomness"])
    own_mode = owner_mode(mode).value
    for party, keys in report["op_counts"].items():
        own, peer = keys["own_key"], keys.get("peer_key", {})
        items = [
            (f"encryptions (own key, {own_mode})", own["encryptions"], "encryption_own"),
            ("decryptions (CRT)", own["decryptions"], "decryption_crt"),
            (f"re-randomisations (peer key, {mode.value})", peer.get("rerandomisations", 0),
             "rerandomisation"),
            ("plaintext adds", peer.get("plaintext_adds", 0), "plaintext_add"),
        ]  # fmt: skip
        for bits, n in peer.get("scalar_mults", {}).items():
            key = "product_35_m32" if int(bits) > 21 else "product_21_m32"
            items.append((f"products M·[[X]], {bits}-bit entries", n, key))
        for name, count, key in items:
            per_user = count / users
            rows.append({
                "party": party, "op": name, "count_per_user": round(per_user, 3),
                "cost_ms": round(1e3 * costs[key], 4),
                "ms_per_user": round(1e3 * costs[key] * per_user, 3),
            })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--randomness", choices=("full", "short_exponent"), default="full")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    report = _in_child(_train_child, args.users, "local", args.cpus, args.bits, args.randomness)
    costs = op_costs(args.bits, Randomness(args.randomness))
    rows = model_rows(report, costs)
    model = sum(r["ms_per_user"] for r in rows)
    out = {
        "epoch": report,
        "op_cost_ms": {k: round(1e3 * v, 4) for k, v in costs.items()},
        "model": rows,
        "model_ms_per_user": round(model, 2),
        "measured_cpu_ms_per_user": report["cpu_ms_per_user"],
        "measured_over_model": round(report["cpu_ms_per_user"] / model, 3),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
