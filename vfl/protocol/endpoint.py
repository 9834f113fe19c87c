"""A message endpoint: typed messages over any :class:`~vfl.transport.channel.Channel`-like object.

It numbers what it sends and checks what it receives: wrong job id, a sequence number that is
not the next one (replay, duplicate, reordering) or an unexpected message type raise
:class:`ProtocolError` instead of being applied.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from vfl.errors import ProtocolError
from vfl.protocol.messages import ErrorRes, Message
from vfl.protocol.serde import Envelope, decode, encode

M = TypeVar("M")


class ByteChannel(Protocol):
    """What an endpoint needs from a transport."""

    peer: str

    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes: ...


class Endpoint:
    """Sends and receives :data:`Message` s for one job, enforcing order."""

    def __init__(self, channel: ByteChannel, *, job_id: str, timeout: float = 60.0) -> None:
        self.channel = channel
        self.job_id = job_id
        self.timeout = timeout
        self._next_out = 0
        self._next_in = 0

    def send(self, message: Message) -> None:
        """Serialise and send with the next sequence number."""
        self.channel.send(encode(Envelope(self.job_id, self._next_out, message)))
        self._next_out += 1

    def recv_any(self) -> Message:
        """Next message, after checking job id and sequence number."""
        env = decode(self.channel.recv(self.timeout))
        if env.job_id != self.job_id:
            raise ProtocolError(
                f"message from '{self.channel.peer}' is for job '{env.job_id}', not '{self.job_id}'"
            )
        if env.seq != self._next_in:
            raise ProtocolError(
                f"message from '{self.channel.peer}' has sequence number {env.seq}, expected "
                f"{self._next_in} (replayed, duplicated or reordered)"
            )
        self._next_in += 1
        return env.message

    def recv(self, expected: type[M]) -> M:
        """Next message, which must be of type ``expected`` (an ``ErrorRes`` is raised)."""
        msg = self.recv_any()
        if isinstance(msg, ErrorRes):
            raise ProtocolError(
                f"party '{self.channel.peer}' rejected step {msg.step}: {msg.reason}"
            )
        if not isinstance(msg, expected):
            raise ProtocolError(
                f"expected {expected.__name__} from '{self.channel.peer}', got {type(msg).__name__}"
            )
        return msg
