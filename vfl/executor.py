"""A small executor interface for batched CPU work (SPEC §9), with two local implementations.

Protocol code hands pure, picklable functions and their arguments to an :class:`Executor` and
gets :class:`concurrent.futures.Future` objects back; it never knows where the work runs.

- :class:`InlineExecutor` runs each call at once in the calling thread (tests, tiny inputs).
- :class:`LocalProcessExecutor` runs calls in a pool of worker processes, one per core by
  default, started with ``spawn`` so that no parent state (sockets, threads, keys of other
  jobs) is forked into them.

A cluster engine (e.g. Ray) fits behind the same members: ``workers``, ``submit``, ``map``
and ``close``. :func:`ordered_map` streams results in input order with a bounded number of calls
in flight, so memory stays bounded by the chunk size times the window, not by the data size.

This module only depends on the standard library.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAP_TIMEOUT_S = 600.0


class Executor(Protocol):
    """Where batched work runs: ``submit(fn, *args)`` returns a future of ``fn(*args)``."""

    @property
    def workers(self) -> int:
        """How many calls can run at the same time (>= 1)."""
        ...

    def submit(self, fn: Callable[..., R], /, *args: Any) -> Future[R]:
        """Schedule ``fn(*args)``; ``fn`` and ``args`` must be picklable for remote executors."""
        ...

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Returns ``[fn(item) for item in items]`` in order, possibly computed in parallel."""
        ...

    def close(self) -> None:
        """Stop the workers; pending calls are cancelled."""
        ...


class ClosesOnExit:
    """Mixin: ``with obj:`` hands ``obj`` to the block and calls ``obj.close()`` after it."""

    def close(self) -> None:
        """Release what the object holds (workers, pools)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class InlineExecutor(ClosesOnExit):
    """Runs every call immediately in the calling thread; ``workers == 1``."""

    @property
    def workers(self) -> int:
        """Always 1."""
        return 1

    def submit(self, fn: Callable[..., R], /, *args: Any) -> Future[R]:
        """Run ``fn(*args)`` now and return a completed future holding its result or error."""
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # handed to the caller through the future, like a pool does
            future.set_exception(exc)
        return future

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Returns ``[fn(item) for item in items]``, computed here."""
        return [fn(item) for item in items]

    def close(self) -> None:
        """Nothing to stop."""


class LocalProcessExecutor(ClosesOnExit):
    """A pool of ``workers`` spawned processes on this machine (default: every core).

    Raises:
        ValueError: if ``workers < 1``.
    """

    def __init__(
        self, workers: int | None = None, *, timeout: float = DEFAULT_MAP_TIMEOUT_S
    ) -> None:
        count = workers if workers is not None else (os.cpu_count() or 1)
        if count < 1:
            raise ValueError(f"an executor needs at least one worker, got {count}")
        if timeout <= 0:
            raise ValueError(f"the map timeout must be positive, got {timeout}")
        self._workers, self.timeout = count, timeout
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(max_workers=count, mp_context=context)
        self._closed = False

    @property
    def workers(self) -> int:
        """Number of worker processes."""
        return self._workers

    def submit(self, fn: Callable[..., R], /, *args: Any) -> Future[R]:
        """Schedule ``fn(*args)`` in a worker process.

        Raises:
            RuntimeError: if the executor was closed.
        """
        self._check_open()
        return self._pool.submit(fn, *args)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Returns ``[fn(item) for item in items]`` computed by the workers.

        Raises:
            RuntimeError: if the executor was closed.
            TimeoutError: if the items take longer than ``timeout`` seconds in all.
        """
        self._check_open()
        return list(self._pool.map(fn, items, timeout=self.timeout))

    def close(self) -> None:
        """Cancel pending calls and wait for the workers to exit."""
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def __repr__(self) -> str:
        return f"LocalProcessExecutor(workers={self._workers})"


def ordered_map(
    executor: Executor, fn: Callable[..., R], args: Iterable[tuple[Any, ...]], *, window: int
) -> Iterator[R]:
    """Yield ``fn(*a)`` for each ``a`` in ``args``, in order, with at most ``window`` in flight.

    ``args`` is consumed lazily, so a generator of chunks is never materialised.

    Raises:
        ValueError: if ``window < 1``.
        Exception: whatever ``fn`` raised, when its result is reached.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    pending: deque[Future[R]] = deque()
    source = iter(args)
    try:
        for item in source:
            pending.append(executor.submit(fn, *item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
