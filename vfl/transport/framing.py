"""Relay wire format: a small routing header the coordinator reads, and a body it never opens.

Frame layout (all integers big-endian)::

    | header length: u32 | header: UTF-8 JSON {job, from, to, session, seq} | body: opaque bytes |

The body is whatever the sending party's protocol layer produced (sealed end to end in
production), so the relay only ever learns the header plus the body length and timing.
``session`` is a random id per sending channel instance and ``seq`` counts from 0 within it;
together they let the relay drop a frame a client re-sent after a lost acknowledgement, and let
the receiver detect duplicates and gaps.

A Recv request is UTF-8 JSON ``{job, from, wait_s}`` (``from`` = the sender whose frames the
caller wants); the reply is one frame, or empty bytes when nothing arrived within ``wait_s``.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from vfl.errors import FrameError

MAX_HEADER_BYTES = 4096
_LEN = struct.Struct(">I")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True)
class FrameHeader:
    """Routing fields of one frame: job id, sender, recipient, sender session and sequence."""

    job: str
    sender: str
    recipient: str
    session: str
    seq: int


@dataclass(frozen=True)
class RecvRequest:
    """A long-poll for the next frame from ``sender`` in ``job``, waiting at most ``wait_s``."""

    job: str
    sender: str
    wait_s: float


def encode_frame(header: FrameHeader, body: bytes) -> bytes:
    """``len(header) || header JSON || body``; the body is copied, never inspected."""
    raw = json.dumps(
        {
            "job": header.job,
            "from": header.sender,
            "to": header.recipient,
            "session": header.session,
            "seq": header.seq,
        },
        separators=(",", ":"),
    ).encode()
    return _LEN.pack(len(raw)) + raw + body


def peek_header(frame: bytes) -> FrameHeader:
    """The header of ``frame``, reading nothing past it.

    Raises:
        FrameError: the length prefix, JSON or any field is invalid.
    """
    n = _header_length(frame)
    fields = _json_object(frame[_LEN.size : _LEN.size + n])
    seq = fields.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise FrameError(f"frame header 'seq' must be a non-negative integer, got {seq!r}")
    return FrameHeader(
        job=_name(fields, "job"),
        sender=_name(fields, "from"),
        recipient=_name(fields, "to"),
        session=_name(fields, "session"),
        seq=seq,
    )


def split_frame(frame: bytes) -> tuple[FrameHeader, bytes]:
    """``(header, body)`` of ``frame`` (used by the receiving party, not by the relay)."""
    header = peek_header(frame)
    return header, frame[_LEN.size + _header_length(frame) :]


def encode_recv_request(req: RecvRequest) -> bytes:
    """JSON bytes of a Recv long-poll request."""
    return json.dumps({"job": req.job, "from": req.sender, "wait_s": req.wait_s}).encode()


def decode_recv_request(data: bytes) -> RecvRequest:
    """Parse a Recv request.

    Raises:
        FrameError: not a JSON object with string ``job``/``from`` and numeric ``wait_s`` >= 0.
    """
    fields = _json_object(data)
    wait = fields.get("wait_s")
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait < 3600:
        raise FrameError(f"recv request 'wait_s' must be a number of seconds, got {wait!r}")
    return RecvRequest(job=_name(fields, "job"), sender=_name(fields, "from"), wait_s=float(wait))


def _header_length(frame: bytes) -> int:
    if len(frame) < _LEN.size:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than its length prefix")
    (n,) = _LEN.unpack_from(frame)
    if n > MAX_HEADER_BYTES or _LEN.size + n > len(frame):
        raise FrameError(f"frame header length {n} is invalid for a {len(frame)}-byte frame")
    return int(n)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"frame header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(fields, dict):
        raise FrameError("frame header must be a JSON object")
    return fields


def _name(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not _NAME.match(value):
        raise FrameError(f"frame header '{key}' must be a short name, got {value!r}")
    return value
