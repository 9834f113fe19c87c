"""Wire format of the PSI: a parameter hello, then streamed chunks of 32-byte group elements.

- :class:`Hello`: the agreed parameters (version, curve, job id, id rule) and this side's set
  size and cached alignment digest, as canonical JSON behind the magic ``VPSH``. It holds no
  id and no function of an id.
- :class:`Frame`: ``VPSI``, kind, announced set total, chunk index, point count and final
  flag (big-endian), followed by ``count`` 32-byte values.
- :class:`Inbound` checks one streamed set: kinds, indices, totals and lengths.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from enum import IntEnum

from vfl.errors import ParameterMismatch, ProtocolError, field_differences

POINT_BYTES = 32
VERSION = 2
_HELLO_MAGIC = b"VPSH"
_HEADER = struct.Struct(">4sBIIIB")  # magic, kind, total, chunk index, points in chunk, final
_MAGIC = b"VPSI"
_P = POINT_BYTES


class FrameKind(IntEnum):
    """What a PSI frame carries."""

    SINGLE = 1  # step 2: the sender's a·H(id), shuffled
    DOUBLE = 2  # step 3: the receiver's points re-blinded by the sender, in received order
    ABORT = 3  # the sender stopped (its own ids were invalid); no payload


@dataclass(frozen=True)
class Hello:
    """What each side announces before any point: parameters both must share, plus its own
    set size ``n`` and the digest of its reusable cached alignment (``""`` if none)."""

    version: int
    curve: str
    job_id: str
    id_rule: str
    n: int
    reuse: str
    id_kind: str = ""  # :class:`~vfl.psi.idkind.IdKind` value; "" from an earlier version

    def agreed(self) -> dict[str, str | int]:
        """The fields that must be equal on both sides."""
        return {
            "version": self.version,
            "curve": self.curve,
            "job_id": self.job_id,
            "id_rule": self.id_rule,
        }

    def check_against(self, peer: Hello, *, me: str) -> None:
        """Compare the agreed fields with the peer's.

        Raises:
            ParameterMismatch: naming every differing field with both sides' values.
        """
        diff = field_differences(self.agreed(), peer.agreed(), me=me, peer="the peer")
        if diff:
            raise ParameterMismatch(
                "PSI parameters differ -- "
                + "; ".join(diff)
                + ". Fix: give both parties the same job config ([psi] curve) and the same "
                "[ids] rule (strip, case, unicode, leading_zeros)"
            )

    def encode(self) -> bytes:
        """``VPSH`` followed by canonical JSON."""
        return _HELLO_MAGIC + json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Hello:
        """Parse a hello.

        Raises:
            ProtocolError: a peer abort, a missing magic or malformed JSON fields.
        """
        if data[:4] == _MAGIC:
            Frame.decode(data)  # raises the abort's own message, or a clear one below
        if data[:4] != _HELLO_MAGIC:
            raise ProtocolError(f"expected the PSI hello, got {len(data)} bytes of something else")
        try:
            fields = json.loads(data[4:].decode())
            hello = cls(**fields)
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
            raise ProtocolError(f"malformed PSI hello: {exc}") from None
        types = {
            "version": int,
            "curve": str,
            "job_id": str,
            "id_rule": str,
            "n": int,
            "reuse": str,
            "id_kind": str,
        }
        if any(not isinstance(getattr(hello, k), t) for k, t in types.items()) or hello.n < 0:
            raise ProtocolError(f"malformed PSI hello fields: {fields}")
        return hello


@dataclass(frozen=True)
class Frame:
    """One chunk of a streamed point set: header plus ``count`` 32-byte points."""

    kind: FrameKind
    total: int
    index: int
    blob: bytes
    final: bool

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
    """Checks the peer's streamed set of one kind; ``expect`` is its announced size."""

    def __init__(self, kind: FrameKind, expect: int) -> None:
        self.kind, self.expect = kind, expect
        self.complete = False
        self.received = 0
        self._next = 0

    def add(self, frame: Frame) -> bytes:
        """Check ``frame`` against the stream so far and return its points (may be empty).

        Raises:
            ProtocolError: wrong kind, index or total, too many points, an early or missing
                final flag, or points after the final chunk.
        """
        if frame.kind != self.kind or frame.index != self._next:
            raise ProtocolError(
                f"expected PSI {self.kind.name} chunk {self._next}, "
                f"got {frame.kind.name} chunk {frame.index}"
            )
        self._next += 1
        if frame.total != self.expect:
            raise ProtocolError(
                f"peer announced {frame.total} {self.kind.name} points, expected {self.expect}"
            )
        if self.complete:
            if frame.blob or not frame.final:
                raise ProtocolError("PSI peer sent points after its final chunk")
            return b""
        self.received += len(frame.blob) // _P
        if self.received > self.expect:
            raise ProtocolError(f"PSI peer sent more than the announced {self.expect} points")
        self.complete = self.received == self.expect
        if frame.final != self.complete or (not frame.blob and not frame.final):
            raise ProtocolError(
                f"PSI chunk {frame.index}: final={frame.final} with "
                f"{self.received} of {self.expect} points received"
            )
        return frame.blob
