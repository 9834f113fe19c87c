"""Each side's PSI points in one preallocated array, and step 3's bounded re-blinding.

:class:`PointArray` holds ``n`` 32-byte points (32 bytes an id, filled chunk by chunk);
:class:`Reblinder` re-blinds the peer's chunks on the executor with at most ``window`` in
flight, writing each result into one :class:`PointArray` that also feeds the stream back;
:func:`members` looks own points up in the peer's sorted set a batch at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future

import numpy as np
import numpy.typing as npt

from vfl.errors import ProtocolError
from vfl.executor import Executor
from vfl.psi.frames import POINT_BYTES
from vfl.psi.resume import BlindingState, Report

_DOUBLE = np.dtype(f"S{POINT_BYTES}")


class PointArray:
    """``n`` 32-byte points in one preallocated array, filled chunk by chunk (32 bytes an id,
    where a list of chunks joined at the end would hold every point twice)."""

    def __init__(self, n: int) -> None:
        self.values, self.filled = np.empty(n, dtype=_DOUBLE), 0

    def add(self, blob: bytes) -> None:
        """Append a chunk of concatenated points (the frames were checked for their count)."""
        k = len(blob) // POINT_BYTES
        self.values[self.filled : self.filled + k] = np.frombuffer(blob, dtype=_DOUBLE)
        self.filled += k

    def release(self) -> npt.NDArray[np.bytes_]:
        """The array, handed over: this object keeps no reference, so the caller's is the
        last one and dropping it frees the memory."""
        values, self.values = self.values, np.empty(0, dtype=_DOUBLE)
        return values


class Reblinder:
    """Step 3: the peer's singly-blinded chunks re-blinded on the executor, at most
    ``window`` chunks in flight; each result lands, in the order received, in one
    preallocated array, which also feeds the stream back (a chunk at a time)."""

    def __init__(
        self, state: BlindingState, executor: Executor, total: int, *, window: int,
        progress: Report,
    ) -> None:  # fmt: skip
        self._state, self._executor, self._window = state, executor, window
        self._progress, self.points = progress, PointArray(total)
        self._pending: deque[Future[bytes]] = deque()
        self._ends: list[int] = [0]  # point offset after each finished chunk

    def submit(self, blob: bytes) -> None:
        """Queue one received chunk; wait for the oldest while more than ``window`` are queued.

        Raises:
            ProtocolError: a peer chunk held an invalid curve point.
        """
        total = self.points.values.size
        self._pending.append(self._state.reblind(self._executor, blob, total))
        while len(self._pending) > self._window:
            self._keep_oldest()

    def returned(self) -> Iterator[bytes]:
        """The re-blinded chunks, in the order received, each as soon as it is done.

        Raises:
            ProtocolError: a peer chunk held an invalid curve point.
        """
        for index in range(len(self._ends) - 1 + len(self._pending)):
            while len(self._ends) <= index + 1:
                self._keep_oldest()
            yield self.points.values[self._ends[index] : self._ends[index + 1]].tobytes()

    def _keep_oldest(self) -> None:
        """Wait for the oldest queued chunk and copy its points into the array."""
        index = len(self._ends) - 1
        try:
            blob = self._pending.popleft().result()
        except ValueError as exc:
            raise ProtocolError(
                f"peer sent an invalid curve point in chunk {index}: {exc}"
            ) from None
        self.points.add(blob)
        self._ends.append(self.points.filled)
        self._progress("reblind", self.points.filled, self.points.values.size)


def members(
    own: npt.NDArray[np.bytes_], peer_sorted: npt.NDArray[np.bytes_], batch: int
) -> npt.NDArray[np.bool_]:
    """``hit[k]``: whether ``own[k]`` occurs in ``peer_sorted`` (binary search, ``batch`` own
    points at a time, so the temporaries are 40 bytes a batch entry, not an id)."""
    hit = np.zeros(own.size, dtype=bool)
    if peer_sorted.size == 0:
        return hit
    for start in range(0, own.size, batch):
        part = own[start : start + batch]
        pos = np.searchsorted(peer_sorted, part)
        pos[pos == peer_sorted.size] = 0
        hit[start : start + part.size] = peer_sorted[pos] == part
    return hit
