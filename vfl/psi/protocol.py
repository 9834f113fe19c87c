"""Diffie-Hellman private set intersection (PSI) between two parties, with alignment.

Party X holds ids ``S_X`` and a fresh secret scalar ``x`` per run; ``H`` is
:func:`vfl.psi.curve.hash_to_point` on the agreed curve with the job id in its domain tag.
Both parties run the same code; the roles differ only in who sends first in each turn.

0. Hello: each side normalises its ids with its ``[ids]`` rule, refuses empty ids and
   duplicates *after* normalisation (a :class:`~vfl.errors.DataError` naming the party, with
   counts and examples -- nothing is silently dropped), then both exchange the agreed
   parameters (version, curve, job id, id rule), their set sizes and the digest of a reusable
   stored alignment (:mod:`vfl.psi.store`). Differing parameters stop both sides with a
   :class:`~vfl.errors.ParameterMismatch`; equal non-empty digests let both reuse.
1. Each side hashes and blinds its ids, ``x·H(id)``, in chunks on its executor (every core).
2. It streams that singly-blinded set in a fresh uniformly random order (from the OS CSPRNG,
   so the order says nothing about its table), chunk by chunk as chunks are computed.
3. Each received chunk is queued for re-blinding at once, ``y·(x·H(id)) = x·y·H(id)``, after
   checking that every element is a valid point; the results stream back in the order
   received, each chunk as soon as it is done.
4. Each side now holds ``x·y·H(id)`` for its own ids (in its own order) and for the other's
   ids (in an order it cannot link to ids). The intersection is the set of own ids whose
   double value occurs in the other's set; under DDH in the curve group nothing else is
   learned but the other set's size. A party receives only group elements: never an id, a
   hash of an id, or ``H(id)`` itself.
5. Alignment: both sides sort the intersection by the double value, which is the same bytes
   on both sides, so row ``k`` of either party's aligned data is the same user.

Messages strictly alternate (active, passive, active, ...), so the exchange also runs over a
request/response relay; a side whose chunks are exhausted answers with an empty final frame.

Memory per party: the normalised ids in a compact column (:mod:`vfl.psi.idcolumn`, their
UTF-8 bytes plus 8 an id), the order (8 bytes an id), each side's points once (32 + 32),
and what a batch of 16 chunks needs; ids are read from any iterable, a batch at a time, and
at most ``2·workers`` chunks are in flight each way. No Python object is kept per id until
the aligned output (``PsiResult.ids``) is built, after the peer's points are freed.

With a work directory, steps 1-3 are checkpointed (:mod:`vfl.psi.resume`): a PSI killed
half-way and run again on the same input reuses that run's ``x`` and order, and recomputes
only the chunks not yet saved; this is the one case where ``x`` is not fresh per run.

References: C. Meadows, "A more efficient cryptographic matchmaking protocol for use in the
absence of a continuously available third party", IEEE S&P 1986; B. A. Huberman, M. Franklin,
T. Hogg, "Enhancing privacy and trust in electronic communities", ACM EC 1999. FATE and
SecretFlow ship the same ECDH-PSI family on Curve25519.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vfl.config.job import PsiCurve
from vfl.config.party import IdRule, Role
from vfl.errors import DataError, ProtocolError
from vfl.executor import Executor, LocalProcessExecutor
from vfl.psi import store
from vfl.psi.frames import POINT_BYTES, VERSION, Frame, FrameKind, Hello, Inbound
from vfl.psi.idcolumn import IdColumn, normalise_column
from vfl.psi.idkind import check_id_kinds, id_kind
from vfl.psi.points import PointArray, Reblinder, members
from vfl.psi.resume import BlindingState, remove_states

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, stages: ``hash`` (step 1), ``send`` (step 2),
``reblind`` (step 3, computing) and ``return`` (step 3, streaming back); on a resumed run
also ``hash_resumed`` and ``reblind_resumed`` (points taken from the checkpoint, included in
``hash`` and ``reblind``), ``state_discarded`` and ``state_unsaved`` (see :mod:`vfl.psi.resume`)."""

DEFAULT_CHUNK_SIZE = 4096
_BATCH_CHUNKS = 16  # ids normalised, looked up and gathered per call: 16 chunks


class ByteLink(Protocol):
    """What PSI needs from a transport: ordered, reliable byte messages to one peer."""

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the peer."""

    def recv(self, timeout: float) -> bytes:
        """Next message from the peer; raises a timeout error after ``timeout`` seconds."""


@dataclass(frozen=True)
class PsiResult:
    """The aligned intersection, identical in order on both sides.

    ``ids[k]`` is the k-th common (normalised) id and ``rows[k]`` its index in the caller's
    id list; ``n_local``/``n_remote`` are the two set sizes, ``n_common == len(ids)``;
    ``alignment_digest`` is the same on both sides; ``reused`` says it came from the store.
    """

    ids: list[str]
    rows: npt.NDArray[np.int64]
    n_local: int
    n_remote: int
    n_common: int
    alignment_digest: str
    reused: bool = False


@dataclass(frozen=True)
class PsiOptions:
    """How to run: the agreed ``curve``, points per frame and per worker call, the wait for
    each peer message, the executor (``None``: a local pool on every core, for this run) and
    the work directory where the alignment is stored and reused and the blinding work is
    checkpointed (``None``: nothing stored)."""

    curve: PsiCurve = PsiCurve.X25519
    chunk_size: int = DEFAULT_CHUNK_SIZE
    timeout: float = 60.0
    executor: Executor | None = None
    work_dir: Path | None = None
    progress: ProgressFn | None = None


def run_psi(
    channel: ByteLink,
    ids: Iterable[str],
    *,
    job_id: str,
    role: Role,
    rule: IdRule,
    party: str | None = None,
    options: PsiOptions = PsiOptions(),
) -> PsiResult:
    """Run steps 0-5 with the peer on ``channel`` and return the aligned intersection.

    ``ids`` is read once, in order (a list, or a generator streaming a user file): row ``k``
    of the result refers to the ``k``-th id. ``rule`` must be the one this party states
    (``[ids]``); ``party`` names this side in error messages. With ``options.work_dir``
    the result is stored there, and reused when both sides' inputs are unchanged (see
    :mod:`vfl.psi.store`); until it is stored, the blinding work is checkpointed there, for
    a restart with the same input to resume it (:mod:`vfl.psi.resume`); a PSI that fails
    other than by a disconnect or timeout (empty intersection, bad or inconsistent peer
    input) deletes that checkpoint, scalar first.

    Raises:
        DataError: own ids empty or duplicated after normalisation, or an empty intersection.
        ParameterMismatch: the peer states a different curve, job, id rule or version.
        ProtocolError: the peer sent a malformed, inconsistent or duplicated set, or aborted.
        ValueError: ``chunk_size`` < 1.
    """
    if options.chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {options.chunk_size}")
    session = _Session(channel, role, options)
    name = party or f"{role.value} party"
    try:
        normalised = normalise_column(
            ids, rule.normalise, party=name, batch=options.chunk_size * _BATCH_CHUNKS
        )
    except DataError:
        session.abort()  # so the peer stops at once instead of timing out
        raise
    digest = store.input_digest(
        normalised, version=VERSION, curve=options.curve, job_id=job_id, rule=rule
    )
    cached = store.load_alignment(options.work_dir, digest) if options.work_dir else None
    mine = Hello(
        VERSION, options.curve.value, job_id, rule.fingerprint(), len(normalised),
        cached.alignment_digest if cached else "", id_kind(normalised).value,
    )  # fmt: skip
    peer = Hello.decode(session.turn(mine.encode()))
    mine.check_against(peer, me=name)
    check_id_kinds(mine.id_kind, peer.id_kind, me=name)
    if cached is not None and peer.reuse == cached.alignment_digest:
        if options.work_dir is not None:
            remove_states(options.work_dir)
        return PsiResult(
            cached.ids, cached.rows, cached.n_local, cached.n_remote, len(cached.ids),
            cached.alignment_digest, reused=True,
        )  # fmt: skip
    state = _blinding_state(options, digest, job_id, len(normalised), session.progress)
    executor = options.executor or LocalProcessExecutor()
    try:
        result = _intersect(session, normalised, peer.n, executor, name, state)
    except (ProtocolError, ValueError):
        # not a disconnect (ChannelTimeout, TransportError: resumable, the state is kept) but
        # an empty intersection or bad peer input: a rerun cannot resume it, so the scalar
        # must not stay on disk
        state.clear()
        raise
    finally:
        state.close()
        if options.executor is None:
            executor.close()
    if options.work_dir is not None:
        _store(options.work_dir, digest, result)
        state.clear()  # the alignment is stored: the scalar must not stay on disk
    return result


def _store(work_dir: Path, digest: str, result: PsiResult) -> None:
    """Persist ``result`` for input ``digest`` (:func:`vfl.psi.store.save_alignment`).

    Raises:
        OSError: if the directory cannot be created or written.
    """
    store.save_alignment(
        work_dir,
        store.StoredAlignment(
            digest, result.alignment_digest, result.ids, result.rows,
            result.n_local, result.n_remote,
        ),
    )  # fmt: skip


def _blinding_state(
    options: PsiOptions, digest: str, job_id: str, n: int, progress: ProgressFn
) -> BlindingState:
    """This run's scalar and order: checkpointed in ``options.work_dir``, else ephemeral.

    Raises:
        StorageError: if the checkpoint directory cannot be written.
    """
    curve, size = options.curve, options.chunk_size
    if options.work_dir is None:
        return BlindingState.ephemeral(
            curve=curve, job_id=job_id, n=n, chunk_size=size, progress=progress
        )
    return BlindingState.open(
        options.work_dir, digest, curve=curve, job_id=job_id, n=n, chunk_size=size,
        progress=progress,
    )  # fmt: skip


def _intersect(
    session: _Session, normalised: IdColumn, n_peer: int, executor: Executor, party: str,
    state: BlindingState,
) -> PsiResult:  # fmt: skip
    """Steps 1-5 with ``state``'s scalar and order (fresh, or resumed from a checkpoint).

    Memory: each side's points once (32 bytes an id each, in preallocated arrays), at most
    ``2·workers`` chunks in flight each way, never a Python object per id.
    """
    n, window = len(normalised), 2 * executor.workers
    singles = state.own_singles(executor, normalised, window=window)
    peer = Reblinder(state, executor, n_peer, window=window, progress=session.progress)
    session.stream(
        FrameKind.SINGLE, session.counted("hash", singles, n), n, n_peer, peer.submit
    )  # fmt: skip
    own = PointArray(n)
    session.stream(FrameKind.DOUBLE, peer.returned(), n_peer, n, own.add)
    peer_sorted = peer.points.release()
    peer_sorted.sort()  # in place: the peer's set is held once
    if peer_sorted.size > 1 and bool(np.any(peer_sorted[1:] == peer_sorted[:-1])):
        raise ProtocolError("PSI peer sent the same point twice (duplicate ids)")
    batch = _BATCH_CHUNKS * state.chunk_size
    hit = members(own.values, peer_sorted, batch)
    del peer_sorted  # the only reference: freed before the intersection is gathered
    return _align(normalised, state.order, own, hit, n_peer, party, batch)


def _align(
    normalised: IdColumn,
    order: npt.NDArray[np.int64],
    own_points: PointArray,
    hit: npt.NDArray[np.bool_],
    n_remote: int,
    party: str,
    batch: int,
) -> PsiResult:
    """Steps 4 and 5: keep own ids whose double value the peer holds, sorted by that value.

    ``own_points`` is released (its array freed once the intersection is taken from it); the
    aligned ids are decoded ``batch`` at a time.

    Raises:
        DataError: if the intersection is empty.
        ProtocolError: if the peer returned one double value for two of this side's ids.
    """
    if not hit.any():
        raise DataError(
            f"PSI of party '{party}'",
            None,
            f"no common ids between {len(normalised)} local and {n_remote} remote ids",
            "check that both parties use the same id column and state the same [ids] "
            "normalisation rule (strip, case, unicode)",
        )
    own = own_points.release()
    common = own[hit]
    del own
    by_value = np.argsort(common, kind="stable")
    common, rows = common[by_value], order[hit][by_value]
    del by_value
    if common.size > 1 and bool(np.any(common[1:] == common[:-1])):
        raise ProtocolError("PSI peer returned the same double value for two different ids")
    ids: list[str] = []
    for start in range(0, rows.size, batch):
        ids.extend(normalised.take(rows[start : start + batch]))
    return PsiResult(
        ids=ids,
        rows=rows,
        n_local=len(normalised),
        n_remote=n_remote,
        n_common=int(rows.size),
        alignment_digest=store.alignment_digest(np.ascontiguousarray(common)),
    )


def _no_progress(stage: str, done: int, total: int) -> None:
    """Ignore progress reports."""


class _Session:
    """One party's side of the alternating chunk exchange."""

    def __init__(self, link: ByteLink, role: Role, options: PsiOptions) -> None:
        self._link, self._first, self.options = link, role is Role.ACTIVE, options
        self.progress: ProgressFn = options.progress or _no_progress

    def abort(self) -> None:
        """Tell the peer this side stopped, without saying why (the reason may hold ids)."""
        try:
            if not self._first:
                self._link.recv(self.options.timeout)  # keep strict alternation
            self._link.send(Frame.abort().encode())
        except TimeoutError:
            pass  # the peer is gone; the caller's own error is the one to report

    def counted(self, stage: str, blobs: Iterator[bytes], total: int) -> Iterator[bytes]:
        """``blobs`` unchanged, reporting ``stage`` progress as each chunk arrives."""
        done = 0
        for blob in blobs:
            done += len(blob) // POINT_BYTES
            self.progress(stage, done, total)
            yield blob

    def stream(
        self, kind: FrameKind, blobs: Iterator[bytes], n_mine: int, n_peer: int,
        on_blob: Callable[[bytes], object],
    ) -> None:  # fmt: skip
        """Send ``blobs`` (``n_mine`` points) as frames of ``kind`` while receiving the peer's
        ``n_peer`` points of the same kind, handing each received chunk to ``on_blob``."""
        inbound = Inbound(kind, n_peer)
        stage = "send" if kind is FrameKind.SINGLE else "return"
        sent, turn, done = 0, 0, False
        while not done or not inbound.complete:
            if done:
                frame = Frame.filler(kind, n_mine, turn)
            else:
                blob = next(blobs, b"")
                sent += len(blob) // POINT_BYTES
                done = sent >= n_mine
                frame = Frame(kind, n_mine, turn, blob, done)
            data = inbound.add(Frame.decode(self.turn(frame.encode())))
            if data:
                on_blob(data)
            turn += 1
            self.progress(stage, sent, n_mine)

    def turn(self, message: bytes) -> bytes:
        """One alternation: active sends then receives, passive receives then sends."""
        if self._first:
            self._link.send(message)
            return self._link.recv(self.options.timeout)
        reply = self._link.recv(self.options.timeout)
        self._link.send(message)
        return reply
