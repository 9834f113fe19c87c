"""Ray tasks behind vfl's :class:`~vfl.executor.Executor` interface (SPEC §9).

A party that outgrows one machine sets ``[executor] kind = "ray"`` in its own party config;
the protocol code does not change. Each call ``fn(*args)`` becomes one Ray task (one CPU):

1. ``address = "local"`` starts a Ray cluster of this machine on loopback (no dashboard,
   usage reporting off) and stops it on :meth:`RayExecutor.close`; ``"auto"`` joins the
   cluster that ``ray start --head`` runs on this machine, ``"ray://HOST:PORT"`` a remote head
   through Ray Client. A process that already called ``ray.init`` keeps its cluster: the
   executor then neither starts nor stops one.
2. A task whose worker process dies is re-run up to ``max_retries`` times (Ray's task retry,
   for system failures only: an exception raised by ``fn`` is not retried but handed back).
   Past that the future fails with :class:`~vfl.errors.TaskLost` naming the party and the
   task: a lost worker never yields a silent wrong result, since every result is the return
   value of one complete run of ``fn``.
3. Tasks receive what ``fn`` needs, pickled; for decryption, OWNER_CRT randomness and PSI
   re-blinding that is the party's private key material (``docs/scaling.md``), so the
   cluster must be the party's own.

Reference: P. Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications",
OSDI 2018.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError, wait
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray.exceptions import RayError, RayTaskError

import vfl
from vfl.errors import ExecutorUnavailable, TaskLost
from vfl.executor import DEFAULT_MAP_TIMEOUT_S, ClosesOnExit, ExecutorSpec

T = TypeVar("T")
R = TypeVar("R")

LOOPBACK = "127.0.0.1"
LOCAL_START_ATTEMPTS = 3  # starts of a local cluster whose raylet misses Ray's 30 s to register


class _StartupTimeout(Exception):
    """A local Ray node that never registered (reported as ExecutorUnavailable)."""


def _call(fn: Callable[..., R], *args: Any) -> R:
    """The one remote function: runs ``fn(*args)`` in a Ray worker."""
    return fn(*args)


def task_name(fn: Callable[..., Any]) -> str:
    """``fn``'s qualified name (that of the wrapped function for a ``functools.partial``)."""
    inner = getattr(fn, "func", fn)
    return str(getattr(inner, "__qualname__", repr(inner)))


def _workers_import_this_vfl() -> None:
    """Put this process's ``vfl`` first on ``PYTHONPATH``, which the local cluster's workers
    inherit, so they run the same code as the party (not another installed copy)."""
    root = str(Path(vfl.__file__).resolve().parents[1])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if not paths or paths[0] != root:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


class RayExecutor(ClosesOnExit):
    """Calls run as Ray tasks on the party's cluster; ``workers`` = ``num_cpus`` or its CPUs.

    Raises:
        ExecutorUnavailable: if the cluster at ``spec.address`` cannot be started or reached.
    """

    def __init__(
        self, spec: ExecutorSpec, *, owner: str, timeout: float = DEFAULT_MAP_TIMEOUT_S
    ) -> None:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before ray.init, inherited by the cluster
        self.spec, self.owner, self.timeout = spec, owner, timeout
        self._owns = not ray.is_initialized()
        if self._owns:
            self._connect()
        cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
        self._workers = spec.num_cpus or max(1, cpus)
        self._task = ray.remote(num_cpus=1, max_retries=spec.max_retries, retry_exceptions=False)(
            _call
        )
        self._closed = False

    def _connect(self) -> None:
        """Start (``local``) or join the cluster ``spec.address`` names."""
        address = self.spec.address
        try:
            if address == "local":
                self._start_local()
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError, _StartupTimeout) as exc:
            raise ExecutorUnavailable(
                f"party '{self.owner}': cannot reach the Ray cluster at [executor] address = "
                f"'{address}' ({exc}). Fix: start it (ray start --head --node-ip-address "
                '127.0.0.1 --disable-usage-stats) or set address = "local"'
            ) from exc

    def _start_local(self) -> None:
        """Start a cluster of this machine on loopback. Ray gives its raylet a fixed 30 s to
        register, which a loaded machine can miss: such a start is stopped and tried again,
        up to :data:`LOCAL_START_ATTEMPTS` times."""
        _workers_import_this_vfl()
        for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
            try:
                ray.init(
                    address="local",
                    num_cpus=self.spec.num_cpus or os.cpu_count() or 1,
                    include_dashboard=False,
                    _node_ip_address=LOOPBACK,
                    log_to_driver=False,
                    configure_logging=False,
                )
                return
            except Exception as exc:  # Ray raises a bare Exception for this one case
                if "timed out during startup" not in str(exc):
                    raise
                ray.shutdown()
                if attempt == LOCAL_START_ATTEMPTS:
                    raise _StartupTimeout(
                        f"the local Ray node did not register in {attempt} starts: {exc}"
                    ) from exc

    @property
    def workers(self) -> int:
        """How many tasks the party splits a batch into (its CPUs on the cluster)."""
        return self._workers

    def submit(self, fn: Callable[..., R], /, *args: Any) -> Future[R]:
        """Schedule ``fn(*args)`` as a Ray task; the future holds its result or error.

        Raises:
            RuntimeError: if the executor was closed.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        out: Future[R] = Future()
        name = task_name(fn)
        self._task.remote(fn, *args).future().add_done_callback(
            lambda done: self._settle(done, out, name)
        )
        return out

    def _settle(self, done: Future[Any], out: Future[Any], name: str) -> None:
        """Hand a finished task's value, ``fn``'s own error or a :class:`TaskLost` to ``out``."""
        try:
            value, error = done.result(), None
        except RayTaskError as exc:  # fn raised: its own exception, not retried
            value, error = None, exc.cause if isinstance(exc.cause, Exception) else exc
        except RayError as exc:  # the worker or its node died more than max_retries times
            value, error = (
                None,
                TaskLost(
                    f"party '{self.owner}': the Ray task {name} was lost "
                    f"({type(exc).__name__}) after {self.spec.max_retries} retries. Fix: check the "
                    "party's Ray cluster (memory, dead nodes) and run the phase again"
                ),
            )
        try:
            if error is None:
                out.set_result(value)
            else:
                out.set_exception(error)
        except InvalidStateError:  # the caller cancelled it meanwhile
            pass

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """Returns ``[fn(item) for item in items]``, one task per item.

        Raises:
            TimeoutError: if the items take longer than ``timeout`` seconds in all.
            TaskLost: if a task's worker died more than ``max_retries`` times.
        """
        futures = [self.submit(fn, item) for item in items]
        _, pending = wait(futures, timeout=self.timeout)
        if pending:
            for future in pending:
                future.cancel()
            raise TimeoutError(
                f"party '{self.owner}': {len(pending)} of {len(futures)} Ray tasks "
                f"{task_name(fn)} unfinished after {self.timeout} s"
            )
        return [future.result() for future in futures]

    def close(self) -> None:
        """Stop the cluster if this executor started it; later submits raise."""
        if not self._closed:
            self._closed = True
            if self._owns:
                ray.shutdown()

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.spec.address!r}, workers={self._workers})"
