"""The narrow channel interface every transport implements, and its in-process twin.

A channel moves opaque byte strings in order between two endpoints. The protocol layer
serialises messages itself, so nothing but bytes -- never a shared object -- crosses.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Protocol

from vfl.errors import ChannelTimeout


class Channel(Protocol):
    """One endpoint of an ordered, reliable, bidirectional byte-message link."""

    peer: str

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the peer."""

    def recv(self, timeout: float) -> bytes:
        """Next message from the peer; raises :class:`ChannelTimeout` after ``timeout`` s."""


@dataclass
class TrafficCounter:
    """Bytes and messages sent through an endpoint (thread-safe)."""

    bytes_sent: int = 0
    messages_sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int) -> None:
        """Record one message of ``n`` bytes."""
        with self._lock:
            self.bytes_sent += n
            self.messages_sent += 1


class InMemoryChannel:
    """Endpoint of an in-process channel; build a connected pair with :meth:`pair`."""

    def __init__(
        self, name: str, peer: str, inbox: queue.Queue[bytes], outbox: queue.Queue[bytes]
    ) -> None:
        self.name, self.peer = name, peer
        self._inbox, self._outbox = inbox, outbox
        self.traffic = TrafficCounter()
        self.sent: list[bytes] | None = None  # set to [] to record every payload sent

    @classmethod
    def pair(cls, a: str, b: str) -> tuple[InMemoryChannel, InMemoryChannel]:
        """Two connected endpoints named ``a`` and ``b``."""
        ab: queue.Queue[bytes] = queue.Queue()
        ba: queue.Queue[bytes] = queue.Queue()
        return cls(a, b, inbox=ba, outbox=ab), cls(b, a, inbox=ab, outbox=ba)

    def send(self, data: bytes) -> None:
        """Copy ``data`` into the peer's inbox."""
        if not isinstance(data, bytes):
            raise TypeError("channels carry bytes only")
        self.traffic.add(len(data))
        if self.sent is not None:
            self.sent.append(data)
        self._outbox.put(data)

    def recv(self, timeout: float) -> bytes:
        """Block for the next message, at most ``timeout`` seconds."""
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise ChannelTimeout(
                f"{self.name}: no message from party '{self.peer}' within {timeout:.0f} s"
            ) from None
