"""Batched Paillier kernels of the interactive layer, inline or on an executor (SPEC §9).

``dot``: ``[[M·X]]`` for a plaintext integer matrix ``M`` (m x d) and packed ``[[X]]``
(d x g): output ``(i, c)`` is ``prod_j [[X_jc]]^(M_ij) mod n^2``, computed by
:func:`vfl.crypto.batched.combine` (fixed-base windowed tables shared by the ``m`` rows, one
inversion per output for negative entries).

``decrypt``: CRT decryption of many ciphertexts.

The two parties alternate (one computes while the other waits), so each may spread a batch
over the machine's cores with ``workers > 0`` (a
:class:`~vfl.executor.LocalProcessExecutor` of its own) or over the party's configured
executor (``executor=``: a shared local pool or its Ray cluster, not closed here). Workers
receive only public ciphertexts and small integers -- and, for decryption, the owner's own
private key, in chunks of at most ``chunk_size`` ciphertexts per task.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from vfl.crypto.batched import combine
from vfl.crypto.encoding import IntArray
from vfl.crypto.paillier import EncryptedVector, PrivateKey
from vfl.executor import (
    DEFAULT_TASK_CHUNK,
    ClosesOnExit,
    Executor,
    LocalProcessExecutor,
    task_chunks,
)

_MIN_PARALLEL_DECRYPTIONS = 16


def decrypt_many(private_key: PrivateKey, ciphertexts: list[int]) -> list[int]:
    """Returns the residues of ``ciphertexts`` (CRT decryption)."""
    return [private_key.raw_decrypt(c) for c in ciphertexts]


class Kernels(ClosesOnExit):
    """Batched ``M·[[X]]`` and decryption: inline (``workers=0``), on ``workers`` local
    processes of its own, or on the party's ``executor`` (which the caller closes)."""

    def __init__(
        self,
        workers: int = 0,
        *,
        executor: Executor | None = None,
        chunk_size: int = DEFAULT_TASK_CHUNK,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self._owned = LocalProcessExecutor(workers) if workers and executor is None else None
        self._executor = executor or self._owned
        self.workers = self._executor.workers if self._executor is not None else 0
        self.chunk_size = chunk_size

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
        bases = [vec.ciphertexts[j * g : (j + 1) * g] for j in range(d)]
        out = combine(bases, m_arr, vec.public_key.nsquare, executor=self._executor)
        return EncryptedVector(vec.public_key, [c for row in out for c in row], (len(m_arr), g))

    def decrypt(self, private_key: PrivateKey, ciphertexts: list[int]) -> list[int]:
        """Residues of ``ciphertexts``, in order."""
        if self._executor is None or len(ciphertexts) < _MIN_PARALLEL_DECRYPTIONS:
            return decrypt_many(private_key, ciphertexts)
        ranges = task_chunks(len(ciphertexts), self._executor, self.chunk_size)
        chunks = [ciphertexts[r.start : r.stop] for r in ranges]
        done = self._executor.map(partial(decrypt_many, private_key), chunks)
        return [x for part in done for x in part]

    def close(self) -> None:
        """Stops the worker processes it started (not a party's executor)."""
        if self._owned is not None:
            self._owned.close()
        self._owned = self._executor = None
