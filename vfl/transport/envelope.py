"""The header every E-P message carries *inside* its seal, and the receiver's order check.

Sealed plaintext layout (integers big-endian)::

    | header length: u16 | header: UTF-8 JSON | payload chunk |
    header = {"v": 1, "job", "from", "to", "phase", "step", "seq", "part", "parts"}

``seq`` counts the sealed envelopes of one direction from 0 (a message larger than the chunk
size becomes ``parts`` envelopes with consecutive ``seq``); ``step`` is the protocol step the
sender declared (-1 outside training). Because the header is sealed with the payload, the
coordinator can neither read nor alter it: a relayed envelope it replays, drops, reorders or
reflects back to its sender fails :meth:`SequenceCheck.accept` with a named error.

For resumable phases (later), each side persists its next outgoing and next expected
``seq`` per direction and restarts its :class:`SequenceCheck` from there.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from vfl.errors import EnvelopeError, ReorderError, ReplayError

VERSION = 1
_LEN = struct.Struct(">H")


@dataclass(frozen=True)
class EnvelopeHeader:
    """Job, direction, phase, step, per-direction sequence number and chunk position."""

    job: str
    sender: str
    recipient: str
    phase: str
    step: int
    seq: int
    part: int = 0
    parts: int = 1


def pack(header: EnvelopeHeader, chunk: bytes) -> bytes:
    """``len(header) || header JSON || chunk`` (the plaintext that gets sealed)."""
    raw = json.dumps(
        {
            "v": VERSION,
            "job": header.job,
            "from": header.sender,
            "to": header.recipient,
            "phase": header.phase,
            "step": header.step,
            "seq": header.seq,
            "part": header.part,
            "parts": header.parts,
        },
        separators=(",", ":"),
    ).encode()
    return _LEN.pack(len(raw)) + raw + chunk


def unpack(plain: bytes, *, peer: str) -> tuple[EnvelopeHeader, bytes]:
    """Split an opened envelope into header and chunk.

    Raises:
        EnvelopeError: the header is truncated, not JSON, of another version or ill-typed
            (only possible if the authenticated peer itself sent garbage).
    """
    if len(plain) < _LEN.size:
        raise EnvelopeError(f"envelope from '{peer}' is shorter than its header length")
    (n,) = _LEN.unpack_from(plain)
    try:
        fields = json.loads(plain[_LEN.size : _LEN.size + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"envelope header from '{peer}' is not UTF-8 JSON: {exc}") from exc
    if not isinstance(fields, dict) or fields.get("v") != VERSION:
        raise EnvelopeError(f"envelope from '{peer}' has an unknown header version")
    header = EnvelopeHeader(
        job=_typed(fields, "job", str, peer),
        sender=_typed(fields, "from", str, peer),
        recipient=_typed(fields, "to", str, peer),
        phase=_typed(fields, "phase", str, peer),
        step=_typed(fields, "step", int, peer),
        seq=_typed(fields, "seq", int, peer),
        part=_typed(fields, "part", int, peer),
        parts=_typed(fields, "parts", int, peer),
    )
    if not 0 <= header.part < header.parts:
        raise EnvelopeError(f"envelope from '{peer}' is part {header.part} of {header.parts}")
    return header, plain[_LEN.size + n :]


def _typed(fields: dict[str, Any], key: str, kind: type, peer: str) -> Any:
    value = fields.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EnvelopeError(f"envelope header '{key}' from '{peer}' is {value!r}")
    return value


class SequenceCheck:
    """What the receiver expects next from one peer; refuses anything else before it is used."""

    def __init__(self, *, job: str, me: str, peer: str, next_seq: int = 0) -> None:
        self.job, self.me, self.peer = job, me, peer
        self.next_seq = next_seq

    def accept(self, header: EnvelopeHeader, *, phase: str) -> None:
        """Check ``header`` against the job, the direction, the phase and the next ``seq``.

        Raises:
            ReplayError: ``seq`` was already received (a replay or a duplicate).
            ReorderError: ``seq`` skips ahead (an envelope was dropped or reordered).
            EnvelopeError: wrong job, direction (e.g. reflected back) or phase.
        """
        if header.job != self.job:
            raise EnvelopeError(
                f"{self.me}: envelope from '{self.peer}' belongs to job '{header.job}', "
                f"not '{self.job}'"
            )
        if (header.sender, header.recipient) != (self.peer, self.me):
            raise EnvelopeError(
                f"{self.me}: envelope addressed from '{header.sender}' to '{header.recipient}' "
                f"arrived on the channel from '{self.peer}' (reflected or misrouted)"
            )
        if header.seq < self.next_seq:
            raise ReplayError(
                f"{self.me}: envelope {header.seq} from '{self.peer}' was already received "
                f"(expected {self.next_seq}): replayed or duplicated, rejected"
            )
        if header.seq > self.next_seq:
            raise ReorderError(
                f"{self.me}: envelope {header.seq} from '{self.peer}' arrived before "
                f"{self.next_seq}: reordered or dropped in transit, rejected"
            )
        if header.phase != phase:
            raise EnvelopeError(
                f"{self.me}: envelope {header.seq} from '{self.peer}' is for phase "
                f"'{header.phase}' while this party is in phase '{phase}'"
            )
        self.next_seq += 1
