"""Per-phase cost accounting at a party: wall seconds and bytes on the wire for each phase.

A :class:`CountingChannel` wraps the transport (below the seal, so the counts are the bytes
the coordinator relays) and a :class:`PhaseMeter` closes one record each time the party enters
a new phase: ``handshake``, ``psi``, ``alignment``, ``setup``, ``epoch N``, ``evaluation N``,
``export``. :class:`MeteredModel` switches between ``epoch N`` and ``evaluation N`` as the
training loop alternates between training steps and scoring, without touching the loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vfl.training.inputs import Batch
from vfl.training.recommenders import Recommender


class CountingChannel:
    """A channel that counts the bytes it sends and receives, and delegates everything else."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.peer: str = inner.peer
        self.bytes_sent = 0
        self.bytes_received = 0
        self._lock = threading.Lock()

    def send(self, data: bytes) -> None:
        """Send through the wrapped channel and count ``len(data)``."""
        self.inner.send(data)
        with self._lock:
            self.bytes_sent += len(data)

    def recv(self, timeout: float) -> bytes:
        """Receive from the wrapped channel and count the bytes."""
        data: bytes = self.inner.recv(timeout)
        with self._lock:
            self.bytes_received += len(data)
        return data

    def totals(self) -> tuple[int, int]:
        """(bytes sent, bytes received) so far."""
        with self._lock:
            return self.bytes_sent, self.bytes_received

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Counted(Protocol):
    """Anything that counts the bytes it sent and received."""

    def totals(self) -> tuple[int, int]:
        """(bytes sent, bytes received) so far."""


@dataclass(frozen=True)
class CountedTogether:
    """The byte totals of several counting channels (E's links to its partners), summed."""

    channels: tuple[CountingChannel, ...]

    def totals(self) -> tuple[int, int]:
        """(bytes sent, bytes received) so far over every channel."""
        each = [c.totals() for c in self.channels]
        return sum(s for s, _ in each), sum(r for _, r in each)


@dataclass
class PhaseMeter:
    """Closes a ``{phase, seconds, bytes_sent, bytes_received}`` record at each phase change."""

    channel: Counted | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    _current: str | None = None
    _t0: float = 0.0
    _b0: tuple[int, int] = (0, 0)

    def enter(self, phase: str) -> None:
        """Close the running phase (if any) and start timing ``phase``."""
        if phase == self._current:
            return
        self.close()
        self._current, self._t0, self._b0 = phase, time.perf_counter(), self._bytes()

    def close(self) -> None:
        """Close the running phase; a phase entered again later gets a second record."""
        if self._current is None:
            return
        sent, received = self._bytes()
        self.records.append(
            {
                "phase": self._current,
                "seconds": round(time.perf_counter() - self._t0, 3),
                "bytes_sent": sent - self._b0[0],
                "bytes_received": received - self._b0[1],
            }
        )
        self._current = None

    def _bytes(self) -> tuple[int, int]:
        return (0, 0) if self.channel is None else self.channel.totals()

    def totals(self) -> dict[str, Any]:
        """Seconds and bytes summed over every closed record."""
        return {
            "seconds": round(sum(float(r["seconds"]) for r in self.records), 3),
            "bytes_sent": sum(int(r["bytes_sent"]) for r in self.records),
            "bytes_received": sum(int(r["bytes_received"]) for r in self.records),
        }


class MeteredModel:
    """Wraps a :class:`Recommender` so its training steps and its scoring are metered apart.

    The first training step after scoring opens ``epoch N+1``; the first scoring call after
    training opens ``evaluation N`` (the loop evaluates after every epoch).
    """

    def __init__(
        self,
        model: Recommender,
        meter: PhaseMeter,
        *,
        steps_per_epoch: int = 0,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.meter = meter
        self.name = model.name
        self.steps_per_epoch = steps_per_epoch
        self.emit = emit
        self._epoch = 0
        self._step_in_epoch = 0
        self._training = False

    def train_step(self, step: int, batch: Batch) -> float:
        """Meter under ``epoch N``, then delegate."""
        if not self._training:
            self._epoch += 1
            self._training = True
            self._step_in_epoch = 0
            self.meter.enter(f"epoch {self._epoch}")
        loss = self.model.train_step(step, batch)
        self._step_in_epoch += 1
        self._report_step()
        return loss

    def _report_step(self) -> None:
        """``epoch N step i/n`` about every tenth of an epoch (the pilot draws a bar from it)."""
        n, i = self.steps_per_epoch, self._step_in_epoch
        if self.emit is not None and n > 0 and (i == n or i % max(1, n // 10) == 0):
            self.emit(f"{self.name}: epoch {self._epoch} step {i}/{n}")

    def predict(self, step: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Meter under ``evaluation N``, then delegate."""
        if self._training or self._epoch == 0:
            self._training = False
            self.meter.enter(f"evaluation {self._epoch}")
        return self.model.predict(step, users, items)
