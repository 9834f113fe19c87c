"""One process per party: the coordinator admits a second connection only once the first is gone.

Every RPC of a :class:`~vfl.transport.grpc_channel.GrpcChannel` carries two metadata entries:
``vfl-instance`` (random, one per channel, i.e. per party process) and ``vfl-heartbeat-s``
(how often that process pings, and after how many seconds of silence its peer would call it
lost: ``"1;5"``). The relay keeps, per party, the instance it admitted and when
that instance first joined. A *different* instance of the same party is

1. admitted on ``Join`` when the admitted one is no longer alive: it reported ``done`` or
   ``failed``, or it has been silent for more than :func:`alive_window_s` of its heartbeat
   interval and lost-after time (a killed process being restarted); it then replaces the
   old one;
2. refused on ``Join`` while the admitted one is alive, with a message naming the party, the
   job and the first connection's age (two ``vfl party`` processes for one party: the second
   stops at once, the first is unaffected);
3. refused on every other RPC (``Send``, ``Recv``, ``Heartbeat``): only the admitted process
   may read the party's mailbox or speak for it on the job board.

An RPC without the metadata (another client of the relay) is admitted as before. A restarted
coordinator has no record and adopts whichever instance speaks first.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from vfl.transport.board import PartyState, PartyStatus

INSTANCE_KEY = "vfl-instance"
HEARTBEAT_KEY = "vfl-heartbeat-s"
_MIN_WINDOW_S = 3.0


def alive_window_s(heartbeat_s: float, lost_after_s: float = 5.0) -> float:
    """Seconds of silence after which a process pinging every ``heartbeat_s`` counts as gone.

    ``max(3, 2 * heartbeat_s + 1, lost_after_s + 1)``: two missed heartbeats plus a second of
    slack, and at least as long as its peer waits before calling it lost (a loaded machine
    can delay a heartbeat by seconds; the running process must not be replaced for that).
    """
    return max(_MIN_WINDOW_S, 2.0 * heartbeat_s + 1.0, lost_after_s + 1.0)


def encode_liveness(heartbeat_s: float, lost_after_s: float) -> str:
    """The ``vfl-heartbeat-s`` metadata value, e.g. ``"1;5"``."""
    return f"{heartbeat_s:g};{lost_after_s:g}"


def decode_liveness(value: str) -> tuple[float, float]:
    """``(heartbeat_s, lost_after_s)`` from metadata; the defaults (1, 5) if malformed."""
    parts = value.split(";")
    try:
        every, lost = float(parts[0]), float(parts[1]) if len(parts) > 1 else 5.0
    except ValueError:
        return 1.0, 5.0
    return (every, lost) if every > 0 and lost > 0 else (1.0, 5.0)


def failed_before(status: PartyStatus, joined_at: float | None) -> bool:
    """Whether the peer's ``failed`` report is older than this process's join (at
    ``joined_at``, monotonic): it ended an earlier run of the peer, which is then being
    restarted (as both are after a crash), so it does not stop this run."""
    if status.state is not PartyState.FAILED or joined_at is None or status.age_s is None:
        return False
    return status.age_s > time.monotonic() - joined_at


@dataclass(frozen=True)
class Connection:
    """The admitted process of a party: its instance id, heartbeat interval, first join time."""

    instance: str
    window_s: float  # silence after which it counts as gone (alive_window_s)
    since: float  # time.monotonic() of its first RPC


class Admission:
    """Thread-safe record of the admitted instance per party (see the module docstring)."""

    def __init__(self, job: str) -> None:
        self._job = job
        self._lock = threading.Lock()
        self._current: dict[str, Connection] = {}

    def admit(
        self,
        party: str,
        instance: str,
        window_s: float,
        *,
        joining: bool,
        silent_s: float | None,
        finished: bool,
    ) -> str | None:
        """None if ``instance`` may speak for ``party`` now, else the refusal message.

        ``silent_s`` is the party's last-heard age on the job board (None: never heard) and
        ``finished`` whether it last reported done or failed.
        """
        if not instance:
            return None
        now = time.monotonic()
        with self._lock:
            current = self._current.get(party)
            if current is None or current.instance == instance:
                if current is None:
                    self._current[party] = Connection(instance, window_s, now)
                return None
            window = current.window_s
            alive = not finished and silent_s is not None and silent_s <= window
            if joining and not alive:
                self._current[party] = Connection(instance, window_s, now)
                return None
            return self._refusal(party, current, now - current.since, silent_s, window, joining)

    def _refusal(
        self,
        party: str,
        current: Connection,
        age_s: float,
        silent_s: float | None,
        window: float,
        joining: bool,
    ) -> str:
        heard = "" if silent_s is None else f", last heard {silent_s:.1f} s ago"
        if not joining:
            return (
                f"party '{party}' of job '{self._job}' is now connected from another process "
                f"(connected {age_s:.0f} s ago{heard}); this process was replaced. Fix: run "
                f"one '{party}' process per job"
            )
        return (
            f"party '{party}' is already joined to job '{self._job}' by another process "
            f"(first connection {age_s:.0f} s ago{heard}). Fix: stop the other '{party}' "
            f"process or wait for it to finish; a restart after a crash is admitted once the "
            f"old process has been silent for {window:.0f} s"
        )
