"""The part of the coordinator's job board that survives a coordinator restart: who finished.

A party that reported ``done`` and exited is never heard from again. Without this file a
coordinator killed and restarted after that moment (SPEC §8: re-run the same command) would
not know it, and the peer still waiting for that party's final word could not learn that it
finished. So the board writes one small JSON file whenever a party's state changes to or
from ``done`` (never on an ordinary heartbeat), atomically (:mod:`vfl.storage`)::

    {"format": 1, "job": "pilot", "plan_fingerprint": "<plan SHA-256 hex, or empty>",
     "done": {"shop": {"phase": "export", "progress": {"auc": 0.78},
                       "reported_at": 1764581458.2}}}

``reported_at`` is the wall-clock (Unix) time the coordinator recorded that party's latest
``done`` report; a restarted board shows the party as done, its ``age_s`` counted from that
time, so it keeps growing like that of any party that stopped heartbeating. Nothing secret is
stored: the file holds what the board shows every party of the job anyway.

Loading: a missing file is an empty board. A file of another job or plan fingerprint is
ignored (the reason is kept for the coordinator to print) and replaced at the next change. A
file that is not this format -- unreadable, not JSON, a field of the wrong type, a newer
format -- is refused with a :class:`~vfl.errors.CheckpointError` naming the file and the fix
(delete it), so the coordinator never silently forgets that a party finished.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfl.errors import CheckpointError
from vfl.storage import atomic_write_json

FORMAT = 1


@dataclass(frozen=True)
class FinishedParty:
    """A party's last ``done`` report: phase, published progress, Unix time it was recorded."""

    phase: str
    progress: dict[str, Any]
    reported_at: float


@dataclass(frozen=True)
class BoardState:
    """What a state file held for this job (``done``), or why it was ignored (``ignored``)."""

    done: dict[str, FinishedParty] = field(default_factory=dict)
    ignored: str = ""


def save_board_state(
    path: Path, *, job: str, plan_fingerprint: str, done: dict[str, FinishedParty]
) -> None:
    """Replace ``path`` with the finished parties of ``job``, atomically.

    Raises:
        StorageError: disk full, permission denied, read-only, or a file in the way.
    """
    atomic_write_json(
        path,
        {
            "format": FORMAT,
            "job": job,
            "plan_fingerprint": plan_fingerprint,
            "done": {
                name: {"phase": p.phase, "progress": p.progress, "reported_at": p.reported_at}
                for name, p in sorted(done.items())
            },
        },
    )


def load_board_state(path: Path, *, job: str, plan_fingerprint: str) -> BoardState:
    """The finished parties saved in ``path`` for ``job`` under ``plan_fingerprint``.

    Raises:
        CheckpointError: the file is unreadable, not JSON, malformed or of a newer format;
            the message names the file and the fix.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return BoardState()
    except OSError as exc:
        raise CheckpointError(
            f"{path}: coordinator state file cannot be read ({exc.strerror or exc}). Fix: "
            "make it readable, or set coordinator.state in the config to a file in a "
            "writable directory"
        ) from exc
    except UnicodeDecodeError as exc:
        raise _unusable(path, f"is not UTF-8 text ({exc})") from exc
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _unusable(path, f"is not JSON ({exc})") from exc
    saved_job, saved_plan = _header(path, fields)
    if saved_job != job or saved_plan != plan_fingerprint:
        what = f"job '{saved_job}'" if saved_job != job else "another job plan"
        return BoardState(ignored=f"{path} is of {what}, not this one; starting without it")
    return BoardState(done=_entries(path, fields.get("done")))


def _header(path: Path, fields: Any) -> tuple[str, str]:
    """``(job, plan_fingerprint)`` of a parsed state file, after checking its format number."""
    if not isinstance(fields, dict):
        raise _unusable(path, "is not a JSON object")
    version = fields.get("format")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _unusable(path, f"has no valid 'format' number ({version!r})")
    if version > FORMAT:
        raise CheckpointError(
            f"{path}: coordinator state format {version} is newer than this vfl's {FORMAT}. "
            "Fix: run the vfl version that wrote it, or delete the file"
        )
    job, plan = fields.get("job"), fields.get("plan_fingerprint")
    if not isinstance(job, str) or not isinstance(plan, str):
        raise _unusable(path, "lacks the string fields 'job' and 'plan_fingerprint'")
    return job, plan


def _entries(path: Path, done: Any) -> dict[str, FinishedParty]:
    """The ``done`` table of a state file, each entry checked."""
    if not isinstance(done, dict):
        raise _unusable(path, "lacks the 'done' object")
    return {str(name): _entry(path, str(name), entry) for name, entry in done.items()}


def _entry(path: Path, name: str, entry: Any) -> FinishedParty:
    """One party's saved ``{phase, progress, reported_at}``."""
    if isinstance(entry, dict):
        phase, progress, at = entry.get("phase"), entry.get("progress"), entry.get("reported_at")
        when = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None
        valid = when is not None and math.isfinite(when)
        if isinstance(phase, str) and isinstance(progress, dict) and when is not None and valid:
            return FinishedParty(phase, progress, when)
    raise _unusable(path, f"has a malformed entry for party '{name}'")


def _unusable(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: coordinator state file {why}. Fix: delete {path} and start the coordinator "
        "again (it then starts with no party marked done; a finished party shows as not yet "
        "heard from)"
    )
