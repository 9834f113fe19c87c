"""The executor interface: inline and local-process pools, ordered bounded streaming."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from vfl.executor import Executor, InlineExecutor, LocalProcessExecutor, ordered_map


def _square_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _fail(x: int) -> int:
    raise ValueError(f"bad {x}")


@pytest.mark.parametrize("make", [InlineExecutor, lambda: LocalProcessExecutor(2)])
def test_ordered_map_keeps_order(make: type[Executor]) -> None:
    with make() as executor:
        out = list(ordered_map(executor, _square_pid, ((i,) for i in range(40)), window=3))
    assert [sq for sq, _ in out] == [i * i for i in range(40)]


def test_process_pool_runs_in_other_processes_and_raises_the_worker_error() -> None:
    with LocalProcessExecutor(2) as executor:
        pids = {executor.submit(_square_pid, i).result()[1] for i in range(8)}
        assert executor.workers == 2 and os.getpid() not in pids
        with pytest.raises(ValueError, match="bad 3"):
            executor.submit(_fail, 3).result()


def test_ordered_map_consumes_lazily_within_the_window() -> None:
    pulled: list[int] = []

    def source() -> Iterator[tuple[int]]:
        for i in range(100):
            pulled.append(i)
            yield (i,)

    stream = ordered_map(InlineExecutor(), _square_pid, source(), window=4)
    next(stream)
    assert len(pulled) == 4
    with pytest.raises(ValueError):
        next(ordered_map(InlineExecutor(), _square_pid, source(), window=0))
    with pytest.raises(ValueError):
        LocalProcessExecutor(0)
