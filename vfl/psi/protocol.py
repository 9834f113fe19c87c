"""Diffie-Hellman private set intersection (PSI) between two parties, with alignment.

Party X holds ids ``S_X`` and a fresh secret scalar ``x`` per job; ``H`` is
:func:`vfl.psi.curve.hash_to_point` with the job id in its domain tag. Both parties run the
same code; the roles differ only in who sends first in each turn.

1. Each side normalises its ids with the stated rule, refuses empty ids and duplicates *after*
   normalisation (a :class:`~vfl.errors.DataError` naming the party -- nothing is silently
   dropped), hashes every id to ``H(id)`` and blinds it: ``x·H(id)``.
2. Each side sends its singly-blinded set in a fresh random order (so the order leaks nothing
   about its ids), streamed in chunks of ``chunk_size`` points behind a small header.
3. Each side re-blinds the other's set, ``y·(x·H(id)) = x·y·H(id)``, and streams it back in
   the order it was received.
4. Each side now holds ``x·y·H(id)`` for its own ids (in its own order) and for the other's
   ids (in no order it can link to ids). The intersection is the set of own ids whose double
   value occurs in the other's set; under DDH in the curve group nothing else is learned but
   the other set's size.
5. Alignment: both sides sort the intersection by the double value, which is the same bytes
   on both sides, so row ``k`` of either party's aligned data is the same user.

Messages strictly alternate (active, passive, active, ...), so the exchange also runs over a
request/response relay; a side whose chunks are exhausted answers with an empty final frame.

References: C. Meadows, "A more efficient cryptographic matchmaking protocol for use in the
absence of a continuously available third party", IEEE S&P 1986; B. A. Huberman, M. Franklin,
T. Hogg, "Enhancing privacy and trust in electronic communities", ACM EC 1999. FATE and
SecretFlow ship the same ECDH-PSI family on Curve25519; this module uses the prime-order
subgroup of edwards25519 through libsodium.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vfl.config.party import Role
from vfl.errors import DataError, ProtocolError
from vfl.psi import curve

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, stages in order: ``hash`` (step 1), ``send`` (step 2),
``reblind`` (step 3, computing) and ``return`` (step 3, streaming back)."""

DEFAULT_CHUNK_SIZE = 4096
_EXAMPLES = 3


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
    id list; ``n_local``/``n_remote`` are the two set sizes, ``n_common == len(ids)``.
    """

    ids: list[str]
    rows: npt.NDArray[np.int64]
    n_local: int
    n_remote: int
    n_common: int


def run_psi(
    channel: ByteLink,
    ids: Sequence[str],
    *,
    job_id: str,
    role: Role,
    normalise: Callable[[str], str],
    party: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    timeout: float = 60.0,
    progress: ProgressFn | None = None,
) -> PsiResult:
    """Run steps 1-5 with the peer on ``channel`` and return the aligned intersection.

    ``normalise`` must be the rule both parties state (e.g. ``IdRule.normalise``); ``party``
    names this side in error messages; ``timeout`` bounds each wait for a peer message.

    Raises:
        DataError: own ids empty or duplicated after ``normalise``, or an empty intersection.
        ProtocolError: the peer sent a malformed, inconsistent or duplicated set, or aborted.
        ValueError: ``chunk_size`` < 1.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    session = _Session(channel, role, chunk_size, timeout, progress or _no_progress)
    name = party or f"{role.value} party"
    try:
        normalised = normalise_ids(ids, normalise, party=name)
    except DataError:
        session.abort()  # so the peer stops at once instead of timing out
        raise
    scalar = curve.random_scalar()
    order = list(range(len(normalised)))
    random.SystemRandom().shuffle(order)
    singles = session.blind_all((curve.hash_to_point(normalised[i], job_id) for i in order), scalar)
    peer_singles = session.exchange(FrameKind.SINGLE, singles, "send", expect=None)
    peer_doubles = session.reblind(peer_singles, scalar)
    own_doubles = session.exchange(FrameKind.DOUBLE, peer_doubles, "return", expect=len(singles))
    return _align(normalised, order, own_doubles, set(peer_doubles), name)


def normalise_ids(ids: Sequence[str], normalise: Callable[[str], str], *, party: str) -> list[str]:
    """Return ``[normalise(i) for i in ids]``, refusing empty results and duplicates.

    Raises:
        DataError: naming ``party``, how many ids are empty or duplicated, and examples.
    """
    normalised = [normalise(raw) for raw in ids]
    empty = [i for i, value in enumerate(normalised) if not value]
    if empty:
        raise DataError(
            f"ids of party '{party}'",
            None,
            f"{len(empty)} of {len(ids)} ids are empty after normalisation "
            f"(rows {empty[:_EXAMPLES]})",
            "fill in or remove the rows with empty ids",
        )
    dupes = [(value, n) for value, n in Counter(normalised).items() if n > 1]
    if dupes:
        examples = ", ".join(f"'{value}' x{n}" for value, n in dupes[:_EXAMPLES])
        raise DataError(
            f"ids of party '{party}'",
            None,
            f"{len(dupes)} ids occur more than once after normalisation (e.g. {examples})",
            "deduplicate the user file, or check the [ids] normalisation rule",
        )
    return normalised


def _align(
    normalised: list[str],
    order: list[int],
    own_doubles: list[bytes],
    peer_doubles: set[bytes],
    party: str,
) -> PsiResult:
    """Step 4 and 5: keep own ids whose double value the peer holds, sorted by that value."""
    common = sorted(
        (double, order[k]) for k, double in enumerate(own_doubles) if double in peer_doubles
    )
    if not common:
        raise DataError(
            f"PSI of party '{party}'",
            None,
            f"no common ids between {len(normalised)} local and {len(peer_doubles)} remote ids",
            "check that both parties use the same id column and state the same [ids] "
            "normalisation rule (strip, case)",
        )
    rows = np.fromiter((row for _, row in common), dtype=np.int64, count=len(common))
    return PsiResult(
        ids=[normalised[row] for row in rows.tolist()],
        rows=rows,
        n_local=len(normalised),
        n_remote=len(peer_doubles),
        n_common=len(common),
    )


def _no_progress(stage: str, done: int, total: int) -> None:
    """Ignore progress reports."""


class _Session:
    """One party's side of the alternating chunk exchange."""

    def __init__(
        self, link: ByteLink, role: Role, chunk_size: int, timeout: float, progress: ProgressFn
    ) -> None:
        self._link, self._first = link, role is Role.ACTIVE
        self._chunk_size, self._timeout, self._progress = chunk_size, timeout, progress

    def abort(self) -> None:
        """Tell the peer this side stopped, without saying why (the reason may hold ids)."""
        try:
            if not self._first:
                self._link.recv(self._timeout)  # keep strict alternation
            self._link.send(Frame.abort().encode())
        except TimeoutError:
            pass  # the peer is gone; the caller's own error is the one to report

    def blind_all(self, points: Iterator[bytes], scalar: bytes) -> list[bytes]:
        """Step 1: ``[scalar·P for P in points]`` for own, trusted points."""
        out = [curve.blind(point, scalar) for point in points]
        self._progress("hash", len(out), len(out))
        return out

    def reblind(self, peer_points: list[bytes], scalar: bytes) -> list[bytes]:
        """Step 3: ``[scalar·P for P in peer_points]``, in received order.

        Raises:
            ProtocolError: a peer point is not a valid point of the prime-order group.
        """
        out: list[bytes] = []
        for start in range(0, len(peer_points), self._chunk_size):
            for point in peer_points[start : start + self._chunk_size]:
                try:
                    out.append(curve.blind(point, scalar))
                except ValueError as exc:
                    raise ProtocolError(f"peer sent an invalid curve point: {exc}") from None
            self._progress("reblind", len(out), len(peer_points))
        return out

    def exchange(
        self, kind: FrameKind, points: list[bytes], stage: str, *, expect: int | None
    ) -> list[bytes]:
        """Stream ``points`` to the peer while receiving its set of ``kind`` (``expect`` points)."""
        inbound = Inbound(kind, expect)
        frames = Frame.chunked(kind, points, self._chunk_size)
        turn = 0
        while turn < len(frames) or not inbound.complete:
            mine = frames[turn] if turn < len(frames) else Frame.filler(kind, len(points), turn)
            inbound.add(Frame.decode(self._turn(mine.encode())))
            turn += 1
            self._progress(stage, min(turn * self._chunk_size, len(points)), len(points))
        return inbound.points

    def _turn(self, message: bytes) -> bytes:
        """One alternation: active sends then receives, passive receives then sends."""
        if self._first:
            self._link.send(message)
            return self._link.recv(self._timeout)
        reply = self._link.recv(self._timeout)
        self._link.send(message)
        return reply


class FrameKind(IntEnum):
    """What a PSI frame carries."""

    SINGLE = 1  # step 2: the sender's x·H(id), shuffled
    DOUBLE = 2  # step 3: the receiver's points re-blinded by the sender, in received order
    ABORT = 3  # the sender stopped (its own ids were invalid); no payload


_HEADER = struct.Struct(">4sBIIIB")  # magic, kind, total, chunk index, points in chunk, final
_MAGIC = b"VPSI"
_P = curve.POINT_BYTES


@dataclass(frozen=True)
class Frame:
    """One chunk of a streamed point set: header plus ``count`` 32-byte points."""

    kind: FrameKind
    total: int
    index: int
    blob: bytes
    final: bool

    @classmethod
    def chunked(cls, kind: FrameKind, points: list[bytes], size: int) -> list[Frame]:
        """Split ``points`` into frames of at most ``size`` points (one frame if empty)."""
        starts = range(0, len(points), size) if points else range(1)
        return [
            cls(kind, len(points), i, b"".join(points[s : s + size]), s + size >= len(points))
            for i, s in enumerate(starts)
        ]

    @classmethod
    def filler(cls, kind: FrameKind, total: int, index: int) -> Frame:
        """An empty final frame, sent while the peer still has chunks to send."""
        return cls(kind, total, index, b"", True)

    @classmethod
    def abort(cls) -> Frame:
        """The frame that tells the peer this side stopped."""
        return cls(FrameKind.ABORT, 0, 0, b"", True)

    def encode(self) -> bytes:
        """Header followed by the concatenated points."""
        count = len(self.blob) // _P
        return (
            _HEADER.pack(_MAGIC, self.kind, self.total, self.index, count, self.final) + self.blob
        )

    @classmethod
    def decode(cls, data: bytes) -> Frame:
        """Parse and check lengths.

        Raises:
            ProtocolError: bad magic, unknown kind, a peer abort, or a payload length that is
                not ``count`` 32-byte points.
        """
        if len(data) < _HEADER.size or data[:4] != _MAGIC:
            raise ProtocolError(f"not a PSI frame ({len(data)} bytes)")
        _, kind, total, index, count, final = _HEADER.unpack_from(data)
        if kind not in FrameKind.__members__.values() or final > 1:
            raise ProtocolError(f"unknown PSI frame kind {kind} or final flag {final}")
        if kind == FrameKind.ABORT:
            raise ProtocolError(
                "the other party stopped the PSI (its ids are invalid; see its log)"
            )
        blob = data[_HEADER.size :]
        if len(blob) != count * _P:
            raise ProtocolError(
                f"PSI chunk {index}: header says {count} points of {_P} bytes, "
                f"payload has {len(blob)} bytes"
            )
        return cls(FrameKind(kind), total, index, blob, bool(final))


class Inbound:
    """Collects and checks the peer's streamed set of one kind."""

    def __init__(self, kind: FrameKind, expect: int | None) -> None:
        self.kind, self.complete, self._expect = kind, False, expect
        self.points: list[bytes] = []
        self._seen: set[bytes] = set()
        self._total: int | None = None
        self._next = 0

    def add(self, frame: Frame) -> None:
        """Check ``frame`` against the stream so far and keep its points.

        Raises:
            ProtocolError: wrong kind, index or total, too many points, an early or missing
                final flag, or a point that was already received.
        """
        if frame.kind != self.kind or frame.index != self._next:
            raise ProtocolError(
                f"expected PSI {self.kind.name} chunk {self._next}, "
                f"got {frame.kind.name} chunk {frame.index}"
            )
        self._next += 1
        if self._total is None:
            if self._expect is not None and frame.total != self._expect:
                raise ProtocolError(
                    f"peer announced {frame.total} {self.kind.name} points, expected {self._expect}"
                )
            self._total = frame.total
        if frame.total != self._total:
            raise ProtocolError(f"PSI set size changed from {self._total} to {frame.total}")
        if self.complete:
            if frame.blob or not frame.final:
                raise ProtocolError("PSI peer sent points after its final chunk")
            return
        self._keep(frame.blob, frame.total)
        self.complete = len(self.points) == self._total
        if frame.final != self.complete or (not frame.blob and not frame.final):
            raise ProtocolError(
                f"PSI chunk {frame.index}: final={frame.final} with "
                f"{len(self.points)} of {self._total} points received"
            )

    def _keep(self, blob: bytes, total: int) -> None:
        """Append the points of ``blob``, refusing duplicates and more than ``total`` points."""
        new = [blob[i : i + _P] for i in range(0, len(blob), _P)]
        if len(self.points) + len(new) > total:
            raise ProtocolError(f"PSI peer sent more than the announced {total} points")
        for point in new:
            if point in self._seen:
                raise ProtocolError("PSI peer sent the same point twice (duplicate ids)")
            self._seen.add(point)
        self.points.extend(new)
