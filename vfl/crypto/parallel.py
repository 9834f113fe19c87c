"""When batched Paillier work is worth an executor, and how to cut it into chunks (SPEC §9).

The executors themselves (:class:`~vfl.executor.Executor`, inline or a local process pool,
or a cluster engine behind the same interface) live in :mod:`vfl.executor`, shared with PSI.
Chunks cross a process boundary pickled, so parallelism pays only above a work threshold
(:func:`worth_parallel`).
"""

from __future__ import annotations

from vfl.executor import Executor

# Below about this many modular multiplications a chunk is cheaper inline than pickled.
PARALLEL_MIN_MULTIPLICATIONS = 20_000


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
