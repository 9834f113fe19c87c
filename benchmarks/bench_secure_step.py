"""Cost of one encrypted split-learning step at real key sizes, against the op-count model.

Usage: python benchmarks/bench_secure_step.py [--bits 2048] [--users 32] [--d 8] [--h 32]

Runs setup, one training forward and one backward of the secret-shared interactive layer
(both parties in this process, no network) and prints JSON: wall seconds per phase, Paillier
operation counts of the op-count model, and the bytes each message carries.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from vfl.crypto.paillier import EncryptedVector, KeyPair
from vfl.crypto.signed_packing import slots_per_plaintext
from vfl.protocol.secure_layer import ActiveShare, PassiveShare, SecureScales, initial_half


def op_counts(m: int, d: int, h: int, k: int) -> dict[str, int]:
    """Paillier operations per training step with ``k`` slots per plaintext."""
    gh, gd = -(-h // k), -(-d // k)
    return {
        "encryptions": h * gd + m * gh,  # fresh [[pack(V^T)]]_P, [[pack(eta*delta)]]_E
        "decryptions": m * gh + d * gh + m * gd,  # z_B and update at E, dL/db at P
        "scalar_mults": m * d * gh + d * m * gh + m * h * gd,  # B·[[U]], B^T·[[G]], D·[[V^T]]
        "rerandomisations": m * gh + d * gh + m * gd,  # everything returned to its key owner
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--h", type=int, default=32)
    args = ap.parse_args()
    m, d, h, s = args.users, args.d, args.h, SecureScales()
    rng = np.random.default_rng(0)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    e = ActiveShare(KeyPair.generate(args.bits), initial_half(d, h, s, rng), s)
    p = PassiveShare(KeyPair.generate(args.bits), initial_half(d, h, s, rng), s)
    t["keygen_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pk, enc_u = e.setup_payload()
    e.peer_key = p.keys.public_key
    p.accept_setup(pk, enc_u)
    t["setup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc_zb, enc_v = p.forward_payload(rng.uniform(-1, 1, (m, d)), train=True)
    t["forward_p_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    e.enc_vt = EncryptedVector.deserialise(enc_v, p.keys.public_key)
    e.decode_zb(enc_zb)
    enc_g, enc_db = e.backward_payload(rng.normal(0, 1e-3, (m, h)), 0.01)
    t["backward_e_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc_ge, _ = p.backward(enc_g, enc_db)
    t["backward_p_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    e.apply_update(enc_ge)
    t["update_e_s"] = time.perf_counter() - t0
    sizes = {
        "setup": len(enc_u),
        "forward": len(enc_zb) + len(enc_v),
        "backward": len(enc_g) + len(enc_db),
        "update": len(enc_ge),
    }
    k = slots_per_plaintext(args.bits, s.slot_bits)
    step = sum(v for k, v in t.items() if k not in ("keygen_s", "setup_s"))
    print(
        json.dumps(
            {
                "bits": args.bits,
                "users": m,
                "d": d,
                "h": h,
                "step_seconds": round(step, 3),
                **{k: round(v, 3) for k, v in t.items()},
                "slots_per_plaintext": k,
                "ops": op_counts(m, d, h, k),
                "bytes": sizes,
            }
        )
    )


if __name__ == "__main__":
    main()
