"""Per-operation cost of the Paillier layer, printed as JSON.

Usage: ``python benchmarks/bench_paillier.py [--bits 2048] [--n 200]``

Times ``n`` repetitions of each raw operation of :mod:`vfl.crypto.paillier` on one fresh key
and reports the mean in milliseconds, plus the slot geometry of the secure layer's packing
(:class:`vfl.protocol.fixed_point.SecureScales`) at that key size.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from collections.abc import Callable, Sequence

from vfl.crypto.paillier import KeyPair
from vfl.crypto.pool import RandomnessPool
from vfl.crypto.signed_packing import slots_per_plaintext
from vfl.protocol.fixed_point import SecureScales


def _mean_ms(operation: Callable[[int], object], n: int) -> float:
    """Returns the mean wall time in ms of ``operation(i)`` for ``i`` in ``range(n)``."""
    start = time.perf_counter()
    for i in range(n):
        operation(i)
    return round((time.perf_counter() - start) * 1000 / n, 4)


def run(bits: int, n: int) -> dict[str, object]:
    """Returns the benchmark results for an ``bits``-bit key and ``n`` repetitions."""
    start = time.perf_counter()
    keys = KeyPair.generate(bits)
    keygen_s = time.perf_counter() - start
    pk, sk = keys.public_key, keys.private_key
    plain = [secrets.randbelow(pk.n) for _ in range(n)]
    start = time.perf_counter()
    pooled = RandomnessPool(pk, size=n, workers=0).take(n)
    precompute_ms = (time.perf_counter() - start) * 1000 / n
    cts = [pk.raw_encrypt(m) for m in plain]
    scalars = [secrets.randbits(40) | 1 << 39 for _ in range(n)]
    scales = SecureScales()
    return {
        "bits": bits,
        "n": n,
        "keygen_s": round(keygen_s, 3),
        "encrypt_fresh_ms": _mean_ms(lambda i: pk.raw_encrypt(plain[i]), n),
        "r_pow_n_precompute_ms": round(precompute_ms, 4),
        "encrypt_pooled_ms": _mean_ms(lambda i: pk.raw_encrypt(plain[i], r_pow_n=pooled[i]), n),
        "decrypt_ms": _mean_ms(lambda i: sk.raw_decrypt(cts[i]), n),
        "add_ms": _mean_ms(lambda i: pk.raw_add(cts[i], cts[i - 1]), n),
        "mul_scalar_40bit_ms": _mean_ms(lambda i: pk.raw_mul_scalar(cts[i], scalars[i]), n),
        "packing": {
            "sigma": scales.sigma,
            "max_users": scales.max_users,
            "slot_bits": scales.slot_bits,
            "slots_per_ciphertext": slots_per_plaintext(bits, scales.slot_bits),
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Parses ``--bits`` and ``--n`` and prints the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=2048, help="Paillier modulus size")
    parser.add_argument("--n", type=int, default=200, help="repetitions per operation")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.bits, args.n), indent=2))


if __name__ == "__main__":
    main()
