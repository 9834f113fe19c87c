"""Named pause points, so fault tests can kill a process at an exact step of a protocol.

Some steps (the four messages of a model export, for instance) last microseconds: a kill
timed from outside almost never lands between two of them. A pause point holds the process
at a named step for a while, after printing ``pause point <name>`` to stderr; the test's
supervisor kills it when it reads that line.

Off unless the environment sets ``VFL_PAUSE_AT=<name>[=<seconds>]`` (default 5 s), which a
test sets for one process start only. A pause changes no state and sends nothing: a process
that is not killed carries on as if it had been slow.
"""

from __future__ import annotations

import os
import sys
import time

ENV = "VFL_PAUSE_AT"
_DEFAULT_S = 5.0


def pause_point(name: str) -> None:
    """Sleep here if ``VFL_PAUSE_AT`` names this point (see the module docstring)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, seconds = spec.partition("=")
    if point != name:
        return
    print(f"pause point {name}", file=sys.stderr, flush=True)
    time.sleep(float(seconds) if seconds else _DEFAULT_S)
