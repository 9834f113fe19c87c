"""A message recorder for tests and audits: every message a party receives, typed.

Wrap the byte channel an :class:`~vfl.protocol.endpoint.Endpoint` reads from::

    recorded = RecordingChannel(channel)
    endpoint = Endpoint(recorded, job_id=...)
    ...
    recorded.received            # [SetupRes(...), SecureForwardRes(...), ...]
    recorded.of_type(SecureForwardRes)

The recorder decodes a copy of each payload with :func:`vfl.protocol.serde.decode`; the
endpoint still reads (and checks) the original bytes, so recording changes nothing.
"""

from __future__ import annotations

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
