"""Dialling the coordinator: progress lines while nothing answers, and a bounded deadline.

A party process dials the coordinator once, at join. Nothing listening at the address is
retried with backoff for ``network.connect_timeout_s`` (seconds, separate from the long
per-message ``timeout_s``), with a line now and then naming the address, the attempt and
the seconds waited; then :class:`~vfl.errors.ChannelTimeout` names the address and the keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from vfl.errors import ChannelTimeout, TransportError

_WAIT_LINE_S = 2.0  # while dialling, one progress line at most this often
_GRACE_POLL_S = 0.5


@dataclass(frozen=True)
class JoinReply:
    """What the coordinator hands a party that joins: job id, its parties and the plan text."""

    job: str
    parties: tuple[str, ...]
    plan: str | None


class AlreadyJoined(TransportError):
    """The coordinator refused the join: another process of this party is joined."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details


class DialProgress:
    """What ``GrpcChannel.join`` says while it waits: address, attempt, seconds."""

    def __init__(
        self,
        *,
        name: str,
        target: str,
        connect_timeout_s: float,
        on_wait: Callable[[str], None] | None,
    ) -> None:
        self.name, self.target, self.connect_timeout_s = name, target, connect_timeout_s
        self._on_wait = on_wait
        self._start = time.monotonic()
        self._attempts, self._said_at = 0, -_WAIT_LINE_S

    def attempt_failed(self, last: str) -> None:
        """Count a failed attempt; tell ``on_wait`` at most every ``_WAIT_LINE_S``."""
        self._attempts += 1
        self.say((last or "no reply").split(";")[0])

    def say(self, what: str) -> None:
        """One progress line (rate-limited) naming the address, attempt and deadline."""
        now = time.monotonic()
        if self._on_wait is None or now - self._said_at < _WAIT_LINE_S:
            return
        self._said_at = now
        self._on_wait(
            f"{self.name}: waiting for the coordinator at {self.target} (attempt "
            f"{max(1, self._attempts)}, {now - self._start:.0f} s of {self.connect_timeout_s:g} "
            f"s): {what}"
        )

    def gave_up(self, last: str) -> ChannelTimeout:
        """The error once the connect deadline has passed."""
        return ChannelTimeout(
            f"{self.name}: coordinator at {self.target} unreachable: no answer within "
            f"network.connect_timeout_s = {self.connect_timeout_s:g} s ({self._attempts} "
            f"attempts; last error: {last}). Fix: check that the coordinator is running at "
            "that address (network.coordinator), or raise network.connect_timeout_s"
        )

    def through_grace(self, join: Callable[[], bytes], *, grace_s: float, deadline: float) -> bytes:
        """``join()``, retried while another process of this party is joined, for at most
        ``grace_s`` after the first refusal (a crashed predecessor falls silent by then).

        Raises:
            TransportError: still refused after ``grace_s`` (or ``deadline``), with the
                coordinator's words: the party, the first connection's age.
        """
        grace_until: float | None = None
        while True:
            try:
                return join()
            except AlreadyJoined as exc:
                now = time.monotonic()
                grace_until = now + grace_s if grace_until is None else grace_until
                if now >= min(grace_until, deadline):
                    raise TransportError(
                        f"party '{self.name}' refused by the coordinator at {self.target}: "
                        f"{exc.details}"
                    ) from None
                self.say(f"another '{self.name}' process is joined; waiting for it to go")
                time.sleep(_GRACE_POLL_S)
