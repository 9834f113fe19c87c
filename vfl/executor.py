"""A small executor interface for batched CPU work (SPEC §9), with two local implementations.

Protocol code hands pure, picklable functions and their arguments to an :class:`Executor` and
gets :class:`concurrent.futures.Future` objects back; it never knows where the work runs.

- :class:`InlineExecutor` runs each call at once in the calling thread (tests, tiny inputs).
- :class:`LocalProcessExecutor` runs calls in a pool of worker processes, one per core by
  default, started with ``spawn`` so that no parent state (sockets, threads, keys of other
  jobs) is forked into them.

- :class:`vfl.ray_executor.RayExecutor` runs calls as Ray tasks on a party's own cluster
  (optional extra ``pip install -e '.[ray]'``, imported only when a config asks for it).

:func:`open_executor` builds the one a party config's ``[executor]`` names
(:class:`ExecutorSpec`). :func:`ordered_map` streams results in input order with a bounded
number of calls in flight, so memory stays bounded by the chunk size times the window, not by
the data size.

This module depends only on the standard library and :mod:`vfl.errors`.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from vfl.errors import ExecutorUnavailable

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAP_TIMEOUT_S = 600.0


_PARENT_POLL_S = 1.0


def exit_with_parent() -> None:
    """Worker initializer: the worker exits once the process that started it is gone.

    Idle workers block on their task queue and would outlive a party killed with SIGKILL;
    a daemon thread compares ``os.getppid()`` with the parent's pid every second instead.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


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
        self._pool = ProcessPoolExecutor(
            max_workers=count, mp_context=context, initializer=exit_with_parent
        )
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


class ExecutorKind(Enum):
    """``[executor] kind``: where a party's batched work runs."""

    LOCAL = "local"  # a pool of spawned processes on this machine
    RAY = "ray"  # Ray tasks on the party's own cluster (optional extra)


DEFAULT_TASK_CHUNK = 64
_RAY_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class ExecutorSpec:
    """One party's executor: ``kind``, the Ray ``address`` (``"local"`` starts a cluster of
    this machine on loopback and stops it on close; ``"auto"`` joins the one ``ray start``
    runs here; ``"ray://HOST:PORT"`` a remote head), ``num_cpus`` (workers; ``None``: every
    core, or the cluster's CPUs), ``chunk_size`` (at most this many Paillier values per task
    for decryptions and randomness batches) and ``max_retries`` (re-runs of a Ray task whose
    worker died; then the error names the party and the task)."""

    kind: ExecutorKind = ExecutorKind.LOCAL
    address: str = "local"
    num_cpus: int | None = None
    chunk_size: int = DEFAULT_TASK_CHUNK
    max_retries: int = 3


@dataclass(frozen=True)
class PartyExecutor(ClosesOnExit):
    """A party's opened executor with its task chunk size: what PSI, the kernels and the
    randomness pools of that party all run on (SPEC §9)."""

    executor: Executor
    chunk_size: int = DEFAULT_TASK_CHUNK

    def close(self) -> None:
        """Stop the executor."""
        self.executor.close()


def open_party_executor(spec: ExecutorSpec, *, owner: str) -> PartyExecutor:
    """:func:`open_executor` with ``spec``'s chunk size; close it after."""
    return PartyExecutor(open_executor(spec, owner=owner), spec.chunk_size)


def open_executor(spec: ExecutorSpec, *, owner: str) -> Executor:
    """The executor ``spec`` names, for party ``owner`` (named in its errors); close it after.

    Raises:
        ExecutorUnavailable: kind ``ray`` without the ``ray`` extra installed, or a cluster
            that cannot be reached (names the address and the fix).
    """
    if spec.kind is ExecutorKind.LOCAL:
        return LocalProcessExecutor(spec.num_cpus)
    if spec.address == "local":
        # read when ray is imported: "0" keeps a one-node cluster on 127.0.0.1 (on Linux Ray
        # otherwise swaps loopback for the host's routable address)
        os.environ.setdefault(_RAY_SINGLE_NODE_ENV, "0")
    try:
        from vfl.ray_executor import RayExecutor
    except ImportError as exc:
        raise ExecutorUnavailable(
            f"party '{owner}': [executor] kind = \"ray\" needs the optional Ray extra ({exc}). "
            "Fix: pip install -e '.[ray]' (or set kind = \"local\")"
        ) from exc
    return RayExecutor(spec, owner=owner)


def task_chunks(count: int, executor: Executor | None, chunk_size: int) -> list[range]:
    """Contiguous ranges over ``range(count)``: one per worker, each at most ``chunk_size``
    long (so one task's input and output stay bounded whatever ``count`` is)."""
    workers = executor.workers if executor is not None else 1
    size = max(1, min(chunk_size, -(-count // max(1, workers))))
    return [range(i, min(i + size, count)) for i in range(0, count, size)]


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
