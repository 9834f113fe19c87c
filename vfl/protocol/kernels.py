"""Batched Paillier kernels of the interactive layer, inline or split across worker processes.

``dot``: ``[[M·X]]`` for a plaintext integer matrix ``M`` (m x d) and packed ``[[X]]``
(d x g): output ``(i, c)`` is ``prod_j [[X_jc]]^(M_ij) mod n^2``. Negative coefficients use
``[[X_jc]]^-1``, inverted once per base for the whole batch, not once per product.

``decrypt``: CRT decryption of many ciphertexts.

The two parties alternate (one computes while the other waits), so each may spread a batch
over the machine's cores: rows of ``M`` (or ciphertexts) are cut into one chunk per worker.
Workers are spawned processes (nothing of the parent is forked) and receive only public
ciphertexts and small integers -- and, for decryption, the owner's own private key.
"""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType

import gmpy2
import numpy as np

from vfl.crypto.paillier import EncryptedVector, PrivateKey
from vfl.protocol.fixed_point import IntArray

_MIN_PARALLEL = 8  # below this many output ciphertexts a chunk is not worth the pickling


def dot_rows(
    nsquare: int, columns: list[list[int]], inverses: list[list[int]], rows: list[list[int]]
) -> list[int]:
    """Returns ``[prod_j columns[c][j]^row[j] for row in rows for c]`` mod ``nsquare``.

    ``inverses[c][j]`` is ``columns[c][j]^-1 mod nsquare``, used for negative ``row[j]``.
    """
    n2 = gmpy2.mpz(nsquare)
    bases = [[gmpy2.mpz(c) for c in col] for col in columns]
    invs = [[gmpy2.mpz(c) for c in col] for col in inverses]
    out: list[int] = []
    for row in rows:
        for col, inv in zip(bases, invs, strict=True):
            acc = gmpy2.mpz(1)
            for c, ci, a in zip(col, inv, row, strict=True):
                if a > 0:
                    acc = acc * gmpy2.powmod(c, a, n2) % n2
                elif a < 0:
                    acc = acc * gmpy2.powmod(ci, -a, n2) % n2
            out.append(int(acc))
    return out


def decrypt_many(private_key: PrivateKey, ciphertexts: list[int]) -> list[int]:
    """Returns the residues of ``ciphertexts`` (CRT decryption)."""
    return [private_key.raw_decrypt(c) for c in ciphertexts]


class Kernels:
    """Runs :func:`dot_rows` and :func:`decrypt_many` inline (``workers=0``) or in processes."""

    def __init__(self, workers: int = 0) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)

    def dot(self, vec: EncryptedVector, mat: IntArray) -> EncryptedVector:
        """``[[M·X]]`` given ``vec = [[X]]`` (d x g) and integer ``mat`` (m x d).

        Raises:
            ValueError: if the shapes do not chain.
        """
        d = vec.shape[0]
        g = vec.shape[1] if len(vec.shape) == 2 else 1
        m_arr = np.asarray(mat, dtype=object)
        if m_arr.ndim != 2 or m_arr.shape[1] != d:
            raise ValueError(f"cannot multiply a {m_arr.shape} matrix by encrypted {vec.shape}")
        n2 = vec.public_key.nsquare
        columns = [vec.ciphertexts[c::g] for c in range(g)]
        inverses = [[int(gmpy2.invert(x, n2)) for x in col] for col in columns]
        rows = [[int(a) for a in r] for r in m_arr]
        out = self._map_dot(rows, n2, columns, inverses, per_item=g)
        return EncryptedVector(vec.public_key, out, (len(rows), g))

    def decrypt(self, private_key: PrivateKey, ciphertexts: list[int]) -> list[int]:
        """Residues of ``ciphertexts``, in order."""
        return self._map_decrypt(private_key, ciphertexts)

    def _chunks(self, n_items: int, per_item: int) -> list[tuple[int, int]]:
        """``(start, stop)`` ranges: one per worker, or one if the batch is small."""
        if self._pool is None or n_items * per_item < _MIN_PARALLEL or n_items < 2:
            return [(0, n_items)]
        parts = min(self.workers, n_items)
        bounds = np.linspace(0, n_items, parts + 1).astype(int)
        return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    def _map_dot(
        self,
        rows: list[list[int]],
        n2: int,
        columns: list[list[int]],
        inverses: list[list[int]],
        *,
        per_item: int,
    ) -> list[int]:
        chunks = self._chunks(len(rows), per_item)
        if len(chunks) == 1 or self._pool is None:
            return dot_rows(n2, columns, inverses, rows)
        futures = [self._pool.submit(dot_rows, n2, columns, inverses, rows[a:b]) for a, b in chunks]
        return [x for f in futures for x in f.result()]

    def _map_decrypt(self, key: PrivateKey, cts: list[int]) -> list[int]:
        chunks = self._chunks(len(cts), 1)
        if len(chunks) == 1 or self._pool is None:
            return decrypt_many(key, cts)
        futures = [self._pool.submit(decrypt_many, key, cts[a:b]) for a, b in chunks]
        return [x for f in futures for x in f.result()]

    def close(self) -> None:
        """Stops the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Kernels:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
