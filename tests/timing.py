"""Test deadlines that scale with the machine's load: ``VFL_TEST_TIME_FACTOR`` (default 1).

A deadline that only keeps a broken test from hanging (a process start, a port opening, a job
finishing) goes through :func:`scaled`, so CI on a loaded machine sets e.g.
``VFL_TEST_TIME_FACTOR=3``. A deadline that *is* the property under test (a vanished party
named within 10 s, ``vfl --help`` within 1 s) is never scaled.
"""

from __future__ import annotations

import os

ENV = "VFL_TEST_TIME_FACTOR"


def time_factor() -> float:
    """The factor from ``VFL_TEST_TIME_FACTOR`` (at least 1; 1 when unset or not a number)."""
    raw = os.environ.get(ENV, "1")
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV}={raw!r} is not a number; set it to e.g. 2 or unset it") from exc
    return max(1.0, value)


def scaled(seconds: float) -> float:
    """``seconds`` times the CI time factor: for deadlines that are not the property tested."""
    return seconds * time_factor()
