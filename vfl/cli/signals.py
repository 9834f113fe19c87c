"""SIGINT and SIGTERM as a clean stop: the main thread gets :class:`~vfl.errors.Interrupted`.

Inside :func:`stop_on_signals` the first SIGINT or SIGTERM raises ``Interrupted`` in the main
thread wherever it is (between two bytecodes, so a blocking gRPC call finishes first; every
RPC of a party is bounded by a few seconds). The command's ``finally`` and ``except`` blocks
then stop what it started and report; further signals while it does so are ignored, so the
clean-up is not cut short. A signal ignored by the parent (a background job of a
non-interactive shell ignores SIGINT) is handled all the same.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from vfl.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(what: str) -> Iterator[None]:
    """Raise ``Interrupted("<what> stopped by SIGTERM", signum)`` on the first stop signal.

    Outside the main thread (tests calling a command in a thread) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        raise Interrupted(f"{what} stopped by {signal.Signals(signum).name}", signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
