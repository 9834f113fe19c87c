"""Throughput of vfl.crypto beside phe's own operations, measured in the same run, as JSON.

Usage: ``python benchmarks/crypto.py [--bits 2048] [--quick]``

Rates are operations per CPU second: this process plus its worker processes, i.e.
``resource.getrusage`` ``RUSAGE_SELF`` + ``RUSAGE_CHILDREN`` plus the CPU time of worker
processes still alive (``/proc/<pid>/stat``), so pool refills, table builds in the workers
and values computed but never used are all charged. Wall-clock rates are given beside them.
"Sustained" pool rates run from a full pool until it is full again, crediting the values
computed in between (taken + final stock - initial stock); "with_startup" rates run from
spawning the workers to joining them, crediting only the values taken.

- ``phe``: ``PaillierPublicKey.encrypt(float)``, ``PaillierPrivateKey.decrypt``,
  ``EncryptedNumber * float`` (the way one multiplies by an embedding value with phe) and
  ``EncryptedNumber * int`` with the same 21-bit scalars vfl uses.
- ``vfl``: fresh encryption (full ``r^n``, owner CRT and short-exponent inline; full and
  short-exponent through a background :class:`~vfl.crypto.pool.RandomnessPool`),
  re-randomisation, CRT decryption, signed scalar
  multiplication, and packed slot operations. A slot operation is one slot's worth of a
  homomorphic multiply-by-signed-scalar-and-accumulate: ``M @ [[X]]`` with ``M`` of
  ``m x d`` 21-bit signed entries and ``X`` ``d x h`` packed counts ``m * d * h`` of them.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from phe import paillier as phe_paillier

from vfl.crypto.batched import combine
from vfl.crypto.encoding import lift_signed
from vfl.crypto.paillier import EncryptedVector, KeyPair, PrivateKey, PublicKey
from vfl.crypto.pool import RandomnessPool
from vfl.crypto.randomness import OwnerCrtSource, Randomness, ShortExponentSource
from vfl.crypto.signed_packing import pack_rows, slots_per_plaintext, unpack_rows
from vfl.executor import LocalProcessExecutor
from vfl.protocol.fixed_point import SecureScales

SCALAR_BITS = 21  # b quantised at 20 fractional bits, |b| <= 1, plus sign


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, its joined children and live descendants."""
    own, kids = (resource.getrusage(r) for r in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + _live_children_cpu()


def _live_children_cpu() -> float:
    """CPU seconds (with their reaped children) of live descendant processes, from /proc."""
    tick, total, todo = os.sysconf("SC_CLK_TCK"), 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        for path in glob.glob(f"/proc/{pid}/task/*/children"):
            try:
                with open(path) as f:
                    todo.extend(int(k) for k in f.read().split())
            except OSError:
                continue
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def measure(operation: Callable[[], int]) -> dict[str, float]:
    """Runs ``operation`` (which returns its operation count) and returns its rates."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    count = operation()
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    return {
        "ops": count,
        "per_cpu_s": round(count / cpu, 1),
        "per_wall_s": round(count / wall, 1),
        "cpu_s": round(cpu, 3),
    }


def many(fn: Callable[[int], object], count: int) -> Callable[[], int]:
    """Returns an operation calling ``fn(i)`` for ``i < count`` and returning ``count``."""

    def operation() -> int:
        for i in range(count):
            fn(i)
        return count

    return operation


def times(fn: Callable[[], object], count: int) -> Callable[[], int]:
    """Returns an operation calling ``fn()`` once and counting it as ``count`` operations."""

    def operation() -> int:
        fn()
        return count

    return operation


def _signed_scalar() -> int:
    return secrets.randbelow((1 << (SCALAR_BITS + 1)) - 1) - ((1 << SCALAR_BITS) - 1)


def phe_rates(bits: int, reps: int) -> tuple[dict[str, Any], KeyPair]:
    """phe's default encrypt, decrypt and scalar products, and the same key for vfl."""
    pub, priv = phe_paillier.generate_paillier_keypair(n_length=bits)
    floats = [secrets.randbelow(2**32) / 2**31 - 1.0 for _ in range(reps * 5)]
    ints = [_signed_scalar() for _ in range(reps * 5)]
    enc = [pub.encrypt(x) for x in floats[:reps]]

    rates = {
        "encrypt": measure(many(lambda i: pub.encrypt(floats[i]), reps)),
        "decrypt": measure(many(lambda i: priv.decrypt(enc[i % reps]), reps)),
        "mul_float_scalar": measure(many(lambda i: enc[i % reps] * floats[i], 5 * reps)),
        "mul_int21_scalar": measure(many(lambda i: enc[i % reps] * ints[i], 5 * reps)),
    }
    public = PublicKey(int(pub.n))
    return rates, KeyPair(public, PrivateKey(public, int(priv.p), int(priv.q)))


def fresh_encryption(keys: KeyPair, count: int, mode: Randomness) -> dict[str, Any]:
    """Fresh encryptions through a 2-worker pool: sustained, and from spawn to join."""
    pk = keys.public_key
    plain = [secrets.randbelow(pk.n) for _ in range(count)]
    out: dict[str, Any] = {}

    def encrypt_all(pool: RandomnessPool) -> None:
        for start in range(0, count, 64):
            chunk = plain[start : start + 64]
            for m, r in zip(chunk, pool.take(len(chunk)), strict=True):
                pk.raw_encrypt(m, r_pow_n=r)

    def with_startup() -> int:
        with RandomnessPool(pk, size=256, workers=2, mode=mode, timeout=600) as pool:
            encrypt_all(pool)
        return count

    def sustained(pool: RandomnessPool, stock: int) -> int:
        encrypt_all(pool)
        _wait_full(pool)
        return count - stock + pool.available()  # values computed inside the window

    with RandomnessPool(pk, size=256, workers=2, mode=mode, timeout=600) as pool:
        _wait_full(pool)
        stock = pool.available()
        out["sustained"] = measure(lambda: sustained(pool, stock))
    out["with_startup"] = measure(with_startup)
    return out


def _wait_full(pool: RandomnessPool) -> None:
    """Waits until the pool's stock is back to its size (no chunk left in flight)."""
    while pool.available() < pool.size or pool.pending():
        time.sleep(0.02)


def vfl_unpacked(keys: KeyPair, reps: int) -> dict[str, Any]:
    """Inline encrypt, re-randomise, decrypt and scalar multiply of single ciphertexts."""
    pk, sk = keys.public_key, keys.private_key
    short = ShortExponentSource(pk)
    cts = [pk.raw_encrypt(secrets.randbelow(pk.n)) for _ in range(reps)]
    ints = [_signed_scalar() for _ in range(5 * reps)]
    owner = OwnerCrtSource(sk)

    return {
        "encrypt_full_inline": measure(many(lambda i: pk.raw_encrypt(i), reps)),
        "encrypt_short_inline": measure(
            many(lambda i: pk.raw_encrypt(i, r_pow_n=short.take(1)[0]), 5 * reps)
        ),
        "encrypt_owner_crt_inline": measure(
            many(lambda i: pk.raw_encrypt(i, r_pow_n=owner.take(1)[0]), reps)
        ),
        "rerandomise_full_inline": measure(many(lambda i: pk.rerandomise(cts[i]), reps)),
        "rerandomise_short_inline": measure(
            many(lambda i: pk.rerandomise(cts[i % reps], r_pow_n=short.take(1)[0]), 5 * reps)
        ),
        "decrypt_crt": measure(many(lambda i: sk.raw_decrypt(cts[i]), reps)),
        "mul_int21_scalar": measure(
            many(lambda i: pk.raw_mul_scalar(cts[i % reps], ints[i]), 5 * reps)
        ),
    }


def packed_rates(keys: KeyPair, m: int, d: int, h: int) -> dict[str, Any]:
    """Slot operations of ``M @ [[X]]`` (inline and 2 processes) and of a linear combination.

    ``X`` is packed as the layer packs it (:mod:`vfl.crypto.signed_packing`, the layer's slot
    width from :class:`~vfl.protocol.fixed_point.SecureScales`), 61-bit signed values.
    """
    pk = keys.public_key
    w = SecureScales().slot_bits
    k = slots_per_plaintext(pk.n_bits, w)
    value = 2**61 - 1
    x = np.array([[secrets.randbelow(2 * value) - value for _ in range(h)] for _ in range(d)])
    packed = pack_rows(x.astype(object), w, k)
    enc = EncryptedVector.raw_encrypt(pk, packed, pool=ShortExponentSource(pk))
    mat = np.array([[_signed_scalar() for _ in range(d)] for _ in range(m)], dtype=object)
    out: dict[str, Any] = {"slot_bits": w, "slots_per_ciphertext": k}
    out["m_d_h"] = [m, d, h]
    out["matmul_inline"] = measure(times(lambda: enc.dot(mat), m * d * h))
    with LocalProcessExecutor(2) as executor:
        executor.map(_warm_up, [0, 1])
        out["matmul_2_processes"] = measure(
            times(lambda: enc.dot(mat, executor=executor), m * d * h)
        )
    rows = [enc.ciphertexts] * d  # d packed d x h matrices, as flat rows of ciphertexts
    scalars = np.array([[_signed_scalar() for _ in range(d)]], dtype=object)
    out["linear_combination"] = measure(
        times(lambda: [combine(rows, scalars, pk.nsquare) for _ in range(4)], 4 * d * d * h)
    )
    product = enc.dot(mat[:2])
    lifted = lift_signed(keys.private_key.raw_decrypt_vector(product), pk.n)
    got = unpack_rows(np.array(lifted, dtype=object).reshape(product.shape), w, k, h)
    if not (got == np.dot(mat[:2], x.astype(object))).all():
        raise AssertionError("packed matmul decrypted to a wrong result")
    return out


def _warm_up(_: int) -> int:
    """Imports the batched kernel in a worker (so the measured run does not pay for it)."""
    from vfl.crypto import batched

    return len(batched.__name__)


def run(bits: int, quick: bool) -> dict[str, Any]:
    """All measurements and the two acceptance ratios."""
    reps = 10 if quick else 40
    phe, keys = phe_rates(bits, reps)
    vfl = vfl_unpacked(keys, reps)
    vfl["fresh_encrypt_short_pool"] = fresh_encryption(
        keys, 400 if quick else 2000, Randomness.SHORT_EXPONENT
    )
    vfl["fresh_encrypt_full_pool"] = fresh_encryption(keys, 300 if quick else 400, Randomness.FULL)
    packed = packed_rates(keys, 64 if quick else 256, 32, 30)
    phe_enc, phe_mul = phe["encrypt"]["per_cpu_s"], phe["mul_float_scalar"]["per_cpu_s"]
    best_packed = packed["matmul_inline"]["per_cpu_s"]
    return {
        "bits": bits,
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "phe": phe,
        "vfl": vfl,
        "packed": packed,
        "fresh_randomness_vs_phe_encrypt": round(
            vfl["fresh_encrypt_short_pool"]["sustained"]["per_cpu_s"] / phe_enc, 2
        ),
        "fresh_randomness_with_startup_vs_phe_encrypt": round(
            vfl["fresh_encrypt_short_pool"]["with_startup"]["per_cpu_s"] / phe_enc, 2
        ),
        "fresh_randomness_full_vs_phe_encrypt": round(
            vfl["fresh_encrypt_full_pool"]["sustained"]["per_cpu_s"] / phe_enc, 2
        ),
        "packed_slot_ops_vs_phe_scalar_mul": round(best_packed / phe_mul, 2),
        "packed_slot_ops_vs_phe_int21_scalar_mul": round(
            best_packed / phe["mul_int21_scalar"]["per_cpu_s"], 2
        ),
        "linear_combination_slot_ops_vs_phe_scalar_mul": round(
            packed["linear_combination"]["per_cpu_s"] / phe_mul, 2
        ),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Parses ``--bits`` and ``--quick`` and prints one JSON object."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bits", type=int, default=2048, help="Paillier modulus size")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.bits, args.quick), indent=2))


if __name__ == "__main__":
    main()
