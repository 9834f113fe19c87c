"""Checkpoints of one party's PSI blinding work, so a PSI killed half-way resumes it.

A party's PSI run is fixed by its secret scalar ``x``, its random order ``pi`` of its own
ids and the peer's points it receives. With a work directory, :class:`BlindingState` keeps in
``<work_dir>/psi-state/<first 16 hex digits of the input digest>/``:

1. ``secret``: ``x`` and ``pi``, drawn on first use (OS CSPRNG) and reused by every restart
   with the same input digest (:func:`vfl.psi.store.input_digest`: version, curve, job, id
   rule and every normalised id in order), together with that full digest, ``n`` and the
   chunk size. Written before the first point leaves the party.
2. ``own-<i>``: chunk ``i`` of the singly-blinded set, ``x·H(id)`` for the ids
   ``pi[i·c : (i+1)·c]``, saved as each is computed. A restart reads the saved chunks and
   hands only the missing ones to the executor.
3. ``reblind-<h>``: ``x·P`` for a chunk of peer points whose bytes hash to
   ``h = SHA-256(chunk)``. The key is the exact input, so a hit is always the right answer;
   it hits when the peer also resumed (its chunks are then byte-identical) and misses, at no
   cost but the work, when the peer drew a fresh scalar.

Every file is ``SHA-256(body) || body``, written atomically with mode 0600 (the directory is
0700). A file that is unreadable, truncated, fails its checksum or does not match the
expected length, index or key counts as missing: it is recomputed and reported as the
progress stage ``state_discarded``, so a damaged checkpoint costs time, never a wrong
alignment. A bad ``secret`` file drops the whole directory (the chunks depend on ``x``).
The directory is removed once the alignment is stored, and directories of other digests
(stale inputs) when a PSI starts, so ``x`` does not stay on disk.

Security (semi-honest parties, as for the PSI itself). ``x`` and ``pi`` are reused only for
the identical input: the same ids in the same order, job, curve, rule and version. The
resumed party then sends byte for byte the singly-blinded values the interrupted run sent or
would have sent, so the peer learns nothing it had not already received, and re-blinding
the peer's points with the same ``x`` is what the interrupted run was doing. If the peer
changes its set between two restarts, ``x·(.)`` acts as the same oblivious function on the
same unchanged set ``S`` in both runs: the peer learns ``S ∩ S_1`` and ``S ∩ S_2``, exactly
what two fresh PSI runs with its two sets would reveal, and nothing about ``S`` beyond them.
A changed own input gives a new digest, hence a fresh ``x`` and ``pi``. The files hold a
secret scalar: anyone who can read them (the party's own user) can test ids for membership
in the party's set, as with the stored alignment beside them, which holds the ids outright.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vfl.config.job import PsiCurve
from vfl.executor import Executor, ordered_map
from vfl.psi import curve as groups
from vfl.psi.frames import POINT_BYTES
from vfl.psi.idcolumn import IdColumn
from vfl.storage import atomic_write_bytes, ensure_dir, remove_stale_temporaries, storage_error

STATE_DIR = "psi-state"
SECRET_FILE = "secret"
_NAME_CHARS = 16
_SUM = hashlib.sha256().digest_size
_SCALAR_BYTES = 32
_FORMAT = 1
_QUEUED_WRITES = 8  # checkpoint writes waiting for the disk, at most (a chunk each)

Report = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, as :data:`vfl.psi.protocol.ProgressFn`."""


def random_order(n: int) -> npt.NDArray[np.int64]:
    """A uniformly random permutation of ``range(n)``: argsort of 64-bit keys from the OS
    CSPRNG (a tie, probability below ``n^2 / 2^65``, only fixes the order of two rows)."""
    keys = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64, copy=False)


def remove_states(work_dir: Path, *, keep: str | None = None) -> None:
    """Delete every PSI state directory in ``work_dir`` except the one of digest ``keep``."""
    root = work_dir / STATE_DIR
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if keep is None or entry.name != keep[:_NAME_CHARS]:
            _remove(entry)
    _remove_if_empty(root)


def _remove_if_empty(directory: Path) -> None:
    """Delete ``directory`` if nothing is left in it."""
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def _remove(directory: Path) -> None:
    """Delete the secret first, then the rest of ``directory`` (a file in its place too)."""
    if directory.is_dir() and not directory.is_symlink():
        (directory / SECRET_FILE).unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
    else:
        directory.unlink(missing_ok=True)


def _make_private_dir(directory: Path) -> None:
    """Create ``directory`` afresh with mode 0700 (anything in its place is removed first).

    Raises:
        StorageError: naming the directory, if it cannot be created.
    """
    _remove(directory)
    ensure_dir(directory.parent, private=True)
    try:
        directory.mkdir(mode=0o700)
        os.chmod(directory, 0o700)  # exactly, whatever the umask
    except OSError as exc:
        raise storage_error(directory, exc) from exc


def _seal(body: bytes) -> bytes:
    """``SHA-256(body) || body``."""
    return hashlib.sha256(body).digest() + body


def _unsealed(path: Path) -> bytes | None:
    """The body of a sealed file, or ``None`` if it is missing, unreadable or damaged."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    body = data[_SUM:]
    return body if hashlib.sha256(body).digest() == data[:_SUM] else None


def _is_permutation(order: npt.NDArray[np.int64]) -> bool:
    """Whether ``order`` holds each of ``0 .. len(order)-1`` exactly once."""
    if order.size == 0:
        return True
    if int(order.min()) < 0 or int(order.max()) >= order.size:
        return False
    return bool(np.all(np.bincount(order, minlength=order.size) == 1))


class BlindingState:
    """One party's scalar, order and blinding work for one PSI input; see the module doc.

    Build with :meth:`open` (checkpointed in a work directory) or :meth:`ephemeral` (fresh,
    nothing stored). ``resumed`` says ``scalar`` and ``order`` came from a checkpoint.
    """

    def __init__(
        self, directory: Path | None, scalar: bytes, order: npt.NDArray[np.int64], *,
        curve: PsiCurve, job_id: str, chunk_size: int, resumed: bool, progress: Report,
    ) -> None:  # fmt: skip
        self.directory, self.scalar, self.order, self.resumed = directory, scalar, order, resumed
        self.curve, self.job_id, self.chunk_size = curve, job_id, chunk_size
        self._progress = progress
        self._lock = threading.RLock()  # _count_failure may run inside _save
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="psi-state") if directory else None
        self._written = self._failed = 0  # writes queued, and failed (not one Future each)
        self._queued: deque[Future[Path]] = deque()
        self.own_resumed = self.reblind_resumed = self.discarded = 0

    @classmethod
    def ephemeral(
        cls, *, curve: PsiCurve, job_id: str, n: int, chunk_size: int, progress: Report
    ) -> BlindingState:
        """A fresh scalar and order that are never stored (no work directory)."""
        return cls(
            None, groups.random_scalar(curve), random_order(n), curve=curve, job_id=job_id,
            chunk_size=chunk_size, resumed=False, progress=progress,
        )  # fmt: skip

    @classmethod
    def open(
        cls, work_dir: Path, input_digest: str, *, curve: PsiCurve, job_id: str, n: int,
        chunk_size: int, progress: Report,
    ) -> BlindingState:  # fmt: skip
        """The checkpointed state of ``input_digest`` in ``work_dir``, created if missing.

        Other digests' states are removed. A missing or damaged ``secret`` (or one for another
        ``n`` or chunk size) starts afresh: a new scalar and order, no saved chunk.

        Raises:
            StorageError: if the directory or the secret cannot be written.
            ValueError: if the curve's scalars are not 32 bytes (they always are).
        """
        remove_states(work_dir, keep=input_digest)
        directory = work_dir / STATE_DIR / input_digest[:_NAME_CHARS]
        header = json.dumps(
            [_FORMAT, input_digest, curve.value, n, chunk_size], separators=(",", ":")
        ).encode()
        loaded = _load_secret(directory / SECRET_FILE, header, n)
        if loaded is not None:
            remove_stale_temporaries(directory)
            scalar, order = loaded
        else:
            _make_private_dir(directory)
            scalar, order = groups.random_scalar(curve), random_order(n)
            if len(scalar) != _SCALAR_BYTES:
                raise ValueError(f"a {curve.value} scalar has {len(scalar)} bytes, expected 32")
            body = len(header).to_bytes(4, "big") + header + scalar + order.astype("<i8").tobytes()
            atomic_write_bytes(directory / SECRET_FILE, _seal(body), private=True)
        return cls(
            directory, scalar, order, curve=curve, job_id=job_id, chunk_size=chunk_size,
            resumed=loaded is not None, progress=progress,
        )  # fmt: skip

    def own_singles(
        self, executor: Executor, normalised: Sequence[str], *, window: int
    ) -> Iterator[bytes]:
        """Steps 1-2: yield chunk ``i`` of ``x·H(id)`` over ``order``, for every ``i`` in turn.

        Saved intact chunks come from disk (progress ``hash_resumed``); only the others are
        handed to ``executor`` (in order, ``window`` in flight), and each is saved when done.

        Raises:
            ValueError: as :func:`vfl.psi.curve.hash_and_blind`.
        """
        size, n = self.chunk_size, len(normalised)
        count = -(-n // size)
        take = normalised.take if isinstance(normalised, IdColumn) else None

        def args(i: int) -> tuple[PsiCurve, str, list[str], bytes]:
            rows = self.order[i * size : (i + 1) * size]
            ids = take(rows) if take else [normalised[j] for j in rows.tolist()]
            return self.curve, self.job_id, ids, self.scalar

        saved = self._saved_own(count)
        todo = (args(i) for i in range(count) if i not in saved)
        computed = ordered_map(executor, groups.hash_and_blind, todo, window=window)
        for i in range(count):
            points = min(size, n - i * size)
            blob = self._load_own(i, points) if i in saved else None
            if blob is not None:
                self.own_resumed += points
                self._progress("hash_resumed", self.own_resumed, n)
                yield blob
                continue
            blob = executor.submit(groups.hash_and_blind, *args(i)).result() if i in saved else (
                next(computed)
            )  # fmt: skip
            self._save(f"own-{i}", i.to_bytes(8, "big") + blob)
            yield blob

    def reblind(self, executor: Executor, blob: bytes, total: int) -> Future[bytes]:
        """Step 3 for one peer chunk: ``x·P`` for each point, from the state if saved for these
        exact bytes (a completed future; progress ``reblind_resumed`` out of ``total``), else
        submitted to ``executor`` and saved when done."""
        key = hashlib.sha256(blob).digest()
        cached = self._load_reblind(key, len(blob))
        if cached is not None:
            done: Future[bytes] = Future()
            done.set_result(cached)
            self.reblind_resumed += len(blob) // POINT_BYTES
            self._progress("reblind_resumed", self.reblind_resumed, total)
            return done
        future = executor.submit(groups.reblind, self.curve, blob, self.scalar)
        if self.directory is not None:
            future.add_done_callback(lambda f: self._saved_reblind(key, f))
        return future

    def close(self, *, drop_pending: bool = False) -> None:
        """Finish (or with ``drop_pending`` cancel) queued writes; none is queued after this.

        Failed writes (disk full, ...) only cost a restart the work; they are reported as
        progress ``state_unsaved`` (failed out of all writes).
        """
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True, cancel_futures=drop_pending)
        if self._failed:
            self._progress("state_unsaved", self._failed, self._written)

    def clear(self) -> None:
        """Drop queued writes, then delete the directory, the scalar first (after success)."""
        self.close(drop_pending=True)
        if self.directory is not None:
            _remove(self.directory)
            _remove_if_empty(self.directory.parent)

    def _saved_own(self, count: int) -> set[int]:
        """Indices ``< count`` with an ``own-<i>`` file (not yet checked)."""
        if self.directory is None:
            return set()
        names = {p.name for p in self.directory.glob("own-*")}
        return {i for i in range(count) if f"own-{i}" in names}

    def _load_own(self, index: int, points: int) -> bytes | None:
        """Saved chunk ``index`` if intact, of ``points`` points; else ``None``, reported."""
        if self.directory is None:
            return None
        body = _unsealed(self.directory / f"own-{index}")
        expected = (8 + POINT_BYTES * points, index.to_bytes(8, "big"))
        if body is None or (len(body), body[:8]) != expected:
            self._discard()
            return None
        return body[8:]

    def _load_reblind(self, key: bytes, length: int) -> bytes | None:
        """The saved re-blinding of the peer chunk hashing to ``key``, ``length`` bytes."""
        if self.directory is None:
            return None
        path = self.directory / f"reblind-{key.hex()}"
        if not path.exists():
            return None
        body = _unsealed(path)
        if body is None or len(body) != _SUM + length or body[:_SUM] != key:
            self._discard()
            return None
        return body[_SUM:]

    def _discard(self) -> None:
        """Count and report one damaged checkpoint file (it is recomputed)."""
        self.discarded += 1
        self._progress("state_discarded", self.discarded, self.discarded)

    def _saved_reblind(self, key: bytes, future: Future[bytes]) -> None:
        """Done-callback: save a successful re-blinding under its input's hash."""
        if not future.cancelled() and future.exception() is None:
            self._save(f"reblind-{key.hex()}", key + future.result())

    def _count_failure(self, write: Future[Path]) -> None:
        """Done-callback of a write: count it if it failed (not if it was cancelled)."""
        if not write.cancelled() and write.exception() is not None:
            with self._lock:
                self._failed += 1

    def _save(self, name: str, body: bytes) -> None:
        """Queue an atomic 0600 write of ``SHA-256(body) || body`` to ``name``; with more than
        :data:`_QUEUED_WRITES` queued, wait for the oldest, so a slow disk holds back the
        blinding instead of letting queued chunks pile up in memory."""
        with self._lock:
            if self._writer is None or self.directory is None:
                return
            write = self._writer.submit(
                atomic_write_bytes, self.directory / name, _seal(body), private=True
            )
            self._written += 1
            write.add_done_callback(self._count_failure)
            self._queued.append(write)
            oldest = self._queued.popleft() if len(self._queued) > _QUEUED_WRITES else None
        if oldest is not None:
            wait([oldest])  # a failure is counted by close(), as for every write


def _load_secret(path: Path, header: bytes, n: int) -> tuple[bytes, npt.NDArray[np.int64]] | None:
    """``(scalar, order)`` from a ``secret`` file written for exactly ``header``, else ``None``."""
    body = _unsealed(path)
    size = 4 + len(header) + _SCALAR_BYTES + 8 * n
    if body is None or len(body) != size or body[4 : 4 + len(header)] != header:
        return None
    if int.from_bytes(body[:4], "big") != len(header):
        return None
    start = 4 + len(header)
    order = np.frombuffer(body[start + _SCALAR_BYTES :], dtype="<i8").astype(np.int64)
    if not _is_permutation(order):
        return None
    return body[start : start + _SCALAR_BYTES], order
