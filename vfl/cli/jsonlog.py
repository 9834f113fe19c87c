"""``vfl --log-format json``: every line a command prints becomes one JSON event.

The streams themselves are wrapped (:class:`JsonLines` replaces ``sys.stdout`` and
``sys.stderr``), so every command -- coordinator, party, pilot -- emits structured logs without
a logging call of its own. One event per line::

    {"ts": "2026-12-02T05:20:01.123Z", "process": "coordinator", "pid": 4242,
     "stream": "stdout", "level": "info", "message": "party shop: phase train, running"}

``level`` is ``error`` for the CLI's ``error: ...`` lines, else ``info``. Partial lines are held
until their newline (or a flush); blank lines are dropped.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import sys
from enum import StrEnum
from typing import TextIO


class LogFormat(StrEnum):
    """How the CLI writes its output lines."""

    TEXT = "text"
    JSON = "json"


class JsonLines(io.TextIOBase):
    """A text stream that writes each completed line to ``inner`` as one JSON object."""

    def __init__(self, inner: TextIO, *, process: str, stream: str) -> None:
        super().__init__()
        self.inner, self.process, self.stream = inner, process, stream
        self._pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        """Buffer ``text``; emit one event per completed line."""
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        """Emit a pending partial line, then flush the wrapped stream."""
        if self._pending:
            self._emit(self._pending)
            self._pending = ""
        self.inner.flush()

    def _emit(self, line: str) -> None:
        message = line.rstrip()
        if not message.strip():
            return
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        level = "error" if message.startswith("error:") else "info"
        event = {
            "ts": now, "process": self.process, "pid": os.getpid(), "stream": self.stream,
            "level": level, "message": message,
        }  # fmt: skip
        self.inner.write(json.dumps(event) + "\n")
        self.inner.flush()


def use_json_lines(process: str) -> None:
    """Replace ``sys.stdout`` and ``sys.stderr`` by :class:`JsonLines` for ``process``."""
    if not isinstance(sys.stdout, JsonLines):
        sys.stdout = JsonLines(sys.stdout, process=process, stream="stdout")
    if not isinstance(sys.stderr, JsonLines):
        sys.stderr = JsonLines(sys.stderr, process=process, stream="stderr")
