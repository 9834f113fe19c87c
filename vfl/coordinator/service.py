"""The coordinator process: serve the mutual-TLS relay for one job until told to stop.

1. Read the CA, the coordinator's certificate and key, and the job plan named in the config.
2. Start :class:`~vfl.transport.grpc_relay.RelayServer` on ``bind``, admitting only the
   configured parties (checked against each caller's verified certificate common name) and
   only for this job; each party that joins receives the job plan. The board's state file
   (``state``) says which parties already finished this job and plan before a restart;
   they are shown as done again ("resumed from <file>: shop done").
3. Serve until ``stop_event`` is set or, when running in the main thread, SIGINT/SIGTERM arrives,
   printing each party's phase changes and the progress its own config lets it publish
   with its heartbeats (default: phase and E's epoch number; :mod:`vfl.party.publishing`).
4. Stop the relay and report the bytes moved per (sender, recipient): together with timing and
   the published progress, that is everything the coordinator learns, since E and P seal their
   payloads end to end (with per-session keys: :mod:`vfl.transport.session`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from vfl.config.coordinator import CoordinatorConfig
from vfl.errors import Interrupted
from vfl.transport.board import JobBoard, PartyState
from vfl.transport.grpc_relay import RelayServer, open_capture

_POLL_S = 0.2
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _print(line: str) -> None:
    """Default ``emit``: one line on stdout, flushed so supervisors see it at once."""
    print(line, flush=True)


def run_coordinator(
    cfg: CoordinatorConfig,
    *,
    ready: Callable[[int], None] | None = None,
    stop_event: threading.Event | None = None,
    emit: Callable[[str], None] = _print,
    config_file: str | Path = "coordinator config",
) -> None:
    """Serve the relay for ``cfg``'s job; return after a clean stop.

    ``ready`` is called with the bound port once the relay accepts connections (useful with
    port 0). ``emit`` receives the human-readable status lines.

    Raises:
        TransportError: the bind address is taken or not local.
        ConfigError: the plan file is invalid or names another job.
        CheckpointError: the state file is unreadable or corrupted (the fix: delete it).
        VflError: a certificate file cannot be read.
        Interrupted: SIGINT/SIGTERM arrived while a joined party was still running (after
            a clean stop; the message names the parties and how to resume).
    """
    section = cfg.coordinator
    ca_pem, cert_pem, key_pem = cfg.read_pems()
    plan = cfg.read_plan(config_file)
    stop = stop_event if stop_event is not None else threading.Event()
    with ExitStack() as stack:
        capture = None
        if section.capture is not None:
            capture = stack.enter_context(open_capture(section.capture))  # appends, 0600
        server = RelayServer(
            section.bind,
            ca_pem=ca_pem,
            cert_pem=cert_pem,
            key_pem=key_pem,
            allowed_parties=set(section.parties),
            job_id=section.job,
            plan=None if plan is None else plan.to_json(),
            capture=capture,
            state_file=section.state,
            plan_fingerprint="" if plan is None else plan.fingerprint(),
            active=section.active,
        )
        signalled: list[int] = []
        stack.enter_context(_stop_on_signals(stop, signalled))
        port = server.start()
        try:
            host = section.bind.rsplit(":", 1)[0]
            plan_id = "" if plan is None else f", plan {plan.fingerprint()[:16]}"
            emit(
                f"coordinator for job {section.job} listening on {host}:{port}, "
                f"parties: {', '.join(section.parties)}{plan_id}"
            )
            _announce_state(server.board, section.state, emit)
            if ready is not None:
                ready(port)
            _watch(server.board, stop, emit)
        finally:
            server.stop()
    for line in format_stats(server.stats()):
        emit(line)
    if signalled:
        _raise_if_interrupted(server.board, signalled[0], section.state, config_file)


def _raise_if_interrupted(
    board: JobBoard, signum: int, state: Path | None, config_file: str | Path
) -> None:
    """A stop signal while a joined party was still running interrupts the job: say so.

    Raises:
        Interrupted: naming each running party's phase, the state file and how to resume.
    """
    running = [
        f"{name}: phase {s.phase}"
        for name, s in board.status().items()
        if name in board.joined and s.state is PartyState.RUNNING
    ]
    if not running:
        return
    kept = f"; its state file {state} is kept" if state is not None else ""
    raise Interrupted(
        f"coordinator stopped by {signal.Signals(signum).name} while job '{board.job}' was "
        f"running ({', '.join(running)}){kept}. Fix: re-run `vfl coordinator --config "
        f"{config_file}` to resume; the parties retry until it is back",
        signum,
    )


def _announce_state(board: JobBoard, state: Path | None, emit: Callable[[str], None]) -> None:
    """Say which finished parties the state file restored, or why it was ignored."""
    if board.ignored_state:
        emit(f"coordinator state: {board.ignored_state}")
    if board.resumed:
        emit(f"resumed from {state}: " + ", ".join(f"{name} done" for name in board.resumed))


def _watch(board: JobBoard, stop: threading.Event, emit: Callable[[str], None]) -> None:
    """Until ``stop``: one line whenever a party's phase, state or published progress changes,
    or the state file cannot be saved (its :class:`StorageError`, once per new message)."""
    last: dict[str, tuple[str, str, str]] = {}
    save_error = ""
    while not stop.wait(_POLL_S):
        error = "" if board.save_error is None else str(board.save_error)
        if error != save_error:
            save_error = error
            emit(f"cannot save the coordinator state: {error}" if error else "state saved again")
        for name, status in board.status().items():
            if status.age_s is None:
                continue
            now = (status.phase, status.state.value, _progress_text(status.progress))
            if last.get(name) != now:
                last[name] = now
                phase = now[0] or "(not published)"
                emit(f"party {name}: phase {phase}, {now[1]}" + (f", {now[2]}" if now[2] else ""))


def _progress_text(progress: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(progress.items()))


def format_stats(stats: dict[tuple[str, str], int]) -> list[str]:
    """Report lines for the relay's byte counters, one per (sender, recipient) pair."""
    lines = ["coordinator stopped; bytes relayed (all it learns besides timing):"]
    if not stats:
        lines.append("  none")
    for (sender, recipient), n in sorted(stats.items()):
        lines.append(f"  {sender} -> {recipient}: {n} bytes")
    return lines


@contextmanager
def _stop_on_signals(stop: threading.Event, signalled: list[int]) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM while inside, appending the signal to ``signalled``;
    only possible in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, _handler) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
