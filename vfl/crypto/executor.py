"""A small executor interface for batched Paillier work (SPEC §9).

Batched ciphertext operations split their work into independent chunks and hand them to an
:class:`Executor`. Two implementations live here:

- :class:`InlineExecutor` runs chunks one after the other in the calling thread;
- :class:`LocalProcessExecutor` runs them on a local process pool using every core by default
  (spawned workers, so no parent state such as open sockets is forked).

A cluster engine (Ray, for instance) fits the same protocol with a ``map`` that submits the
chunks remotely; protocol code only sees :class:`Executor`. Chunks cross a process boundary
pickled, so parallelism pays only above a work threshold (:func:`worth_parallel`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Below about this many modular multiplications a chunk is cheaper inline than pickled.
PARALLEL_MIN_MULTIPLICATIONS = 20_000


class Executor(Protocol):
    """Runs a picklable function over chunks and returns the results in order."""

    @property
    def workers(self) -> int:
        """How many chunks run at once (1 for inline)."""
        ...

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Returns ``[fn(item) for item in items]``, possibly computed in parallel."""
        ...


class InlineExecutor:
    """Runs every chunk in the calling thread."""

    @property
    def workers(self) -> int:
        """Always 1."""
        return 1

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Returns ``[fn(item) for item in items]``."""
        return [fn(item) for item in items]


class LocalProcessExecutor:
    """A local process pool of ``workers`` processes (``None``: every core).

    Raises:
        ValueError: if ``workers < 1``.
    """

    def __init__(self, workers: int | None = None, *, timeout: float = 600.0) -> None:
        count = (os.cpu_count() or 1) if workers is None else workers
        if count < 1 or timeout <= 0:
            raise ValueError(f"need workers >= 1 and timeout > 0, got {count}, {timeout}")
        self._workers, self.timeout = count, timeout
        context = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(count, mp_context=context)

    @property
    def workers(self) -> int:
        """Number of worker processes."""
        return self._workers

    def __repr__(self) -> str:
        return f"LocalProcessExecutor(workers={self._workers})"

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Returns ``[fn(item) for item in items]`` computed by the worker processes.

        Raises:
            RuntimeError: if the executor was closed.
            TimeoutError: if the chunks take longer than ``timeout`` seconds.
        """
        if self._pool is None:
            raise RuntimeError(f"{self!r} is closed")
        return list(self._pool.map(fn, items, timeout=self.timeout))

    def close(self) -> None:
        """Stops the workers."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LocalProcessExecutor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def worth_parallel(executor: Executor | None, multiplications: int) -> bool:
    """True if ``executor`` has several workers and the work exceeds the pickling threshold."""
    return (
        executor is not None
        and executor.workers > 1
        and multiplications >= PARALLEL_MIN_MULTIPLICATIONS
    )


def split(count: int, parts: int) -> list[range]:
    """Returns up to ``parts`` contiguous, near-equal, non-empty ranges over ``range(count)``."""
    parts = max(1, min(parts, count))
    bounds = [count * i // parts for i in range(parts + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i] < bounds[i + 1]]
