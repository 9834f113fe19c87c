"""A message recorder for tests and audits: every message a party receives, typed.

Wrap the byte channel an :class:`~vfl.protocol.endpoint.Endpoint` reads from::

    recorded = RecordingChannel(channel)
    endpoint = Endpoint(recorded, job_id=...)
    ...
    recorded.received            # [SetupRes(...), SecureForwardRes(...), ...]
    recorded.of_type(SecureForwardRes)

The recorder decodes a copy of each payload with :func:`vfl.protocol.serde.decode`; the
endpoint still reads (and checks) the original bytes, so recording changes nothing.

A party process records to a file instead, for audits of a real deployment and the
process-level privacy tests, only when its environment sets ``VFL_RECORD_RECEIVED=1``
(off by default): every payload it receives from peer ``name`` over the sealed channel (the
handshake, PSI, the protocol and the export, after unsealing) is appended to
``<work dir>/received/<name>.msgs`` (mode 0600) as an 8-byte big-endian length and the bytes.
The file holds nothing the party did not receive anyway; :func:`read_received` reads it back
as a :class:`Recorded`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from vfl.errors import ProtocolError
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.messages import Message
from vfl.protocol.serde import decode

M = TypeVar("M")


class RecordingChannel:
    """A :class:`ByteChannel` that keeps every message it receives, decoded."""

    def __init__(self, inner: ByteChannel) -> None:
        self.inner = inner
        self.peer = inner.peer
        self.received: list[Message] = []
        self.undecodable: list[bytes] = []  # payloads that are not protocol messages

    def send(self, data: bytes) -> None:
        """Pass ``data`` on unchanged."""
        self.inner.send(data)

    def recv(self, timeout: float) -> bytes:
        """Receive, record a decoded copy, and return the original bytes."""
        data = self.inner.recv(timeout)
        try:
            self.received.append(decode(data).message)
        except ProtocolError:
            self.undecodable.append(data)
        return data

    def of_type(self, cls: type[M]) -> list[M]:
        """The recorded messages of one type, in arrival order."""
        return [m for m in self.received if isinstance(m, cls)]


RECORD_ENV = "VFL_RECORD_RECEIVED"
_LENGTH_BYTES = 8


def received_path(out: Path, peer: str) -> Path:
    """Where a party with work directory ``out`` records what it receives from ``peer``."""
    return out / "received" / f"{peer}.msgs"


class ReceivedFile:
    """Appends each payload it is called with to one file: 8-byte length, then the bytes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path

    def __call__(self, data: bytes) -> None:
        """Append ``data``."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as handle:
            handle.write(len(data).to_bytes(_LENGTH_BYTES, "big") + data)


def recorder_for(out: Path, peer: str) -> ReceivedFile | None:
    """The file recorder for ``peer``'s messages if ``VFL_RECORD_RECEIVED=1``, else None."""
    if os.environ.get(RECORD_ENV) != "1":
        return None
    return ReceivedFile(received_path(out, peer))


@dataclass
class Recorded:
    """What a party received from one peer, as read back from its file."""

    received: list[Message] = field(default_factory=list)
    undecodable: list[bytes] = field(default_factory=list)  # PSI frames, session control
    payloads: list[bytes] = field(default_factory=list)  # every payload, in arrival order

    def of_type(self, cls: type[M]) -> list[M]:
        """The recorded messages of one type, in arrival order."""
        return [m for m in self.received if isinstance(m, cls)]


def read_received(path: Path) -> Recorded:
    """Read a :class:`ReceivedFile` back, decoding each payload that is a protocol message.

    Raises:
        ProtocolError: the file ends inside a record.
    """
    data, at, out = path.read_bytes(), 0, Recorded()
    while at < len(data):
        size = int.from_bytes(data[at : at + _LENGTH_BYTES], "big")
        payload = data[at + _LENGTH_BYTES : at + _LENGTH_BYTES + size]
        if len(payload) != size:
            raise ProtocolError(f"{path}: the last record is cut short")
        at += _LENGTH_BYTES + size
        out.payloads.append(payload)
        try:
            out.received.append(decode(payload).message)
        except ProtocolError:
            out.undecodable.append(payload)
    return out
