"""The coordinator's job board: who joined, when each party was last heard, and what E published.

Parties report ``{phase, state, progress}`` with every heartbeat; the board keeps the latest
report per party with the time it arrived, and answers each heartbeat with every party's
age (seconds since its last heartbeat), phase and state, so a party waiting for its peer can
tell a peer that is working from one that is gone. Nothing here is secret: phases, ages, the
job state and the progress a party's own config lets it publish
(:mod:`vfl.party.publishing`; by default E's epoch number, never a loss, metric or size).

Status wire format (UTF-8 JSON), request ``{job, phase, state, progress}`` and reply
``{job, parties: {name: {age_s, phase, state[, error]}}}``; ``age_s`` is null for a party
that has not been heard from yet. ``state`` is one of :class:`PartyState`. The published
progress stays at the coordinator: a reply carries no ``progress``, only, for a party that
``failed``, the error class name it reported (``error``, a Python identifier), so its peer
can say why the job stopped. A party thus learns its peer's phase and state, nothing else.

The operator's view (``vfl status``, :meth:`JobBoard.encode_view`) is asked with a party's
certificate, so it adds ``progress`` as the asking party may see it: its own published
progress in full, and of every other party only the entries in :data:`PEER_VISIBLE` (the
epoch number, which the passive party learns from the protocol anyway: every aligned user is
in one step per epoch, in an order drawn from the job seed and the epoch).

Given a state file, the board also keeps which parties finished across coordinator restarts
(:mod:`vfl.transport.board_state`): it writes the file when a party's state changes to or
from ``done`` (a party that joins again is running), never per heartbeat, and a board built
on the same file shows those parties as done, their ages counted from the saved report time.
Once every party is done the job is over and nobody needs the record: the file is then
saved with no finished party, so a later session under the same config (``vfl serve`` /
``vfl infer``, a fresh run) does not see an earlier run's peer as done. The live board
still shows them as done until the coordinator stops.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from vfl.errors import FrameError, StorageError
from vfl.phases import Phase
from vfl.transport.board_state import FinishedParty, load_board_state, save_board_state

_MAX_PROGRESS_BYTES = 2048
PEER_VISIBLE = ("epoch",)
"""Published progress entries ``vfl status`` shows to a party other than their publisher."""


class PartyState(Enum):
    """A party's own account of where it is."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class PartyStatus:
    """The latest heartbeat of one party, as the coordinator saw it."""

    age_s: float | None
    phase: str = ""
    state: PartyState = PartyState.RUNNING
    progress: dict[str, Any] = field(default_factory=dict)  # at the coordinator only
    error: str = ""  # the error class a failed party reported

    def reply_entry(self) -> dict[str, Any]:
        """This party's entry of a heartbeat reply: age, phase, state (and a failure's class)."""
        entry: dict[str, Any] = {"age_s": self.age_s, "phase": self.phase}
        entry["state"] = self.state.value
        if self.state is PartyState.FAILED and self.error:
            entry["error"] = self.error
        return entry


def _error_class(state: PartyState, progress: dict[str, Any]) -> str:
    """The error class name a failed party reported, if it is a short identifier (else "")."""
    name = progress.get("error")
    ok = state is PartyState.FAILED and isinstance(name, str) and name.isidentifier()
    return str(name)[:64] if ok else ""


@dataclass(frozen=True)
class Heartbeat:
    """What a party reports with each heartbeat."""

    job: str
    phase: str
    state: PartyState
    progress: dict[str, Any]

    def encode(self) -> bytes:
        """JSON bytes of this heartbeat."""
        return json.dumps(
            {
                "job": self.job,
                "phase": self.phase,
                "state": self.state.value,
                "progress": self.progress,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Heartbeat:
        """Parse a heartbeat request.

        Raises:
            FrameError: not JSON, a field of the wrong type, or progress above 2 KiB.
        """
        fields = _json(data, "heartbeat")
        job, phase, state = fields.get("job"), fields.get("phase"), fields.get("state")
        progress = fields.get("progress", {})
        if not isinstance(job, str) or not isinstance(phase, str) or len(phase) > 64:
            raise FrameError("heartbeat needs string 'job' and 'phase' (<= 64 characters)")
        if state not in {s.value for s in PartyState}:
            raise FrameError(f"heartbeat 'state' must be one of running/done/failed: {state!r}")
        if not isinstance(progress, dict) or len(json.dumps(progress)) > _MAX_PROGRESS_BYTES:
            raise FrameError("heartbeat 'progress' must be a JSON object of at most 2 KiB")
        return cls(job=job, phase=phase, state=PartyState(state), progress=progress)


class JobBoard:
    """Thread-safe last-heard table for the parties of one job, optionally kept in a file.

    After construction, ``resumed`` names the parties the state file showed as done and
    ``ignored_state`` says why a state file of another job or plan was ignored (else empty);
    ``save_error`` is the :class:`StorageError` of the last failed write (retried with each
    heartbeat until a write succeeds), else None.
    """

    def __init__(
        self,
        job: str,
        parties: set[str],
        *,
        state_file: Path | None = None,
        plan_fingerprint: str = "",
    ) -> None:
        """An empty board, or the finished parties ``state_file`` holds for this job and plan.

        Raises:
            CheckpointError: ``state_file`` is unreadable, corrupted or of a newer format.
        """
        self.job = job
        self._parties = frozenset(parties)
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, Heartbeat]] = {}
        self.joined: set[str] = set()
        self._state_file, self._plan = state_file, plan_fingerprint
        self._done: dict[str, FinishedParty] = {}
        self.save_error: StorageError | None = None
        self.resumed: tuple[str, ...] = ()
        self.ignored_state = ""
        if state_file is not None:
            self._resume(state_file)

    def _resume(self, state_file: Path) -> None:
        """Show the parties the state file holds as done, aged from their saved report time."""
        saved = load_board_state(state_file, job=self.job, plan_fingerprint=self._plan)
        self.ignored_state = saved.ignored
        now_mono, now_wall = time.monotonic(), time.time()
        for name, party in saved.done.items():
            if name not in self._parties:
                continue
            self._done[name] = party
            beat = Heartbeat(self.job, party.phase, PartyState.DONE, party.progress)
            self._seen[name] = (now_mono - max(0.0, now_wall - party.reported_at), beat)
        self.resumed = tuple(sorted(self._done))

    def join(self, party: str) -> None:
        """Record that ``party`` fetched the job plan (counts as its first heartbeat)."""
        with self._lock:
            self.joined.add(party)
            self._record(party, Heartbeat(self.job, Phase.JOINED, PartyState.RUNNING, {}))

    def beat(self, party: str, heartbeat: Heartbeat) -> None:
        """Record ``heartbeat`` from ``party`` now."""
        with self._lock:
            self._record(party, heartbeat)

    def _record(self, party: str, heartbeat: Heartbeat) -> None:
        """Store ``heartbeat``; save the state file if the finished parties changed (or the
        last write failed)."""
        self._seen[party] = (time.monotonic(), heartbeat)
        was = self._done.get(party)
        if heartbeat.state is PartyState.DONE:
            report = (heartbeat.phase, heartbeat.progress)
            changed = was is None or (was.phase, was.progress) != report
            if changed:
                self._done[party] = FinishedParty(heartbeat.phase, heartbeat.progress, time.time())
        else:
            changed = self._done.pop(party, None) is not None
        if changed or self.save_error is not None:
            self._save()

    def _save(self) -> None:
        """Write the finished parties, none once all are (under the lock: writes in order)."""
        if self._state_file is None:
            return
        done = {} if self._parties <= self._done.keys() else self._done
        try:
            save_board_state(self._state_file, job=self.job, plan_fingerprint=self._plan, done=done)
        except StorageError as exc:
            self.save_error = exc
        else:
            self.save_error = None

    def status(self, only: Collection[str] | None = None) -> dict[str, PartyStatus]:
        """Every party's age and latest report (of the parties in ``only``, if given)."""
        now = time.monotonic()
        with self._lock:
            seen = dict(self._seen)
        out: dict[str, PartyStatus] = {}
        for name in sorted(self._parties if only is None else self._parties & set(only)):
            if name not in seen:
                out[name] = PartyStatus(age_s=None)
                continue
            at, hb = seen[name]
            error = _error_class(hb.state, hb.progress)
            out[name] = PartyStatus(now - at, hb.phase, hb.state, hb.progress, error)
        return out

    def encode_status(self, only: Collection[str] | None = None) -> bytes:
        """The heartbeat reply: each party's :meth:`PartyStatus.reply_entry` (no progress),
        of the parties in ``only`` if given (those the asking party may see)."""
        parties = {name: s.reply_entry() for name, s in self.status(only).items()}
        return json.dumps({"job": self.job, "parties": parties}).encode()

    def encode_view(self, caller: str, only: Collection[str] | None = None) -> bytes:
        """The ``vfl status`` reply for ``caller``: the heartbeat reply plus ``progress``, in
        full for ``caller``'s own entry, only :data:`PEER_VISIBLE` for the others' (of the
        parties in ``only`` if given)."""
        parties: dict[str, dict[str, Any]] = {}
        for name, s in self.status(only).items():
            shown = {k: v for k, v in s.progress.items() if name == caller or k in PEER_VISIBLE}
            parties[name] = {**s.reply_entry(), "progress": shown}
        return json.dumps({"job": self.job, "parties": parties}).encode()


def decode_status(data: bytes) -> dict[str, PartyStatus]:
    """Parse a heartbeat reply.

    Raises:
        FrameError: not the JSON :meth:`JobBoard.encode_status` writes.
    """
    fields = _json(data, "heartbeat reply")
    parties = fields.get("parties")
    if not isinstance(parties, dict):
        raise FrameError("heartbeat reply lacks 'parties'")
    out: dict[str, PartyStatus] = {}
    for name, s in parties.items():
        age = s.get("age_s") if isinstance(s, dict) else None
        if not isinstance(s, dict) or not (age is None or isinstance(age, int | float)):
            raise FrameError(f"heartbeat reply entry for '{name}' is malformed")
        raw_state = s.get("state", "running")
        known = raw_state in {p.value for p in PartyState}
        state = PartyState(raw_state) if known else PartyState.RUNNING
        out[str(name)] = PartyStatus(
            age_s=None if age is None else float(age),
            phase=str(s.get("phase", "")),
            state=state,
            progress=progress if isinstance(progress := s.get("progress"), dict) else {},
            error=_error_class(state, {"error": s.get("error")}),
        )
    return out


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        fields = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"{what} is not UTF-8 JSON: {exc}") from exc
    if not isinstance(fields, dict):
        raise FrameError(f"{what} must be a JSON object")
    return fields
