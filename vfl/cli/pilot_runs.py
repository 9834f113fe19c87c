"""The pilot's federated runs: one OS process per party and the coordinator's, their progress
echoed as bars.

Each run is a coordinator, E and its passive parties (P; with ``--parties 3`` also L) started
as ``python -m vfl ...`` processes with their own logs; the pilot follows the parties' logs
and draws progress bars for PSI, each epoch's (encrypted) batches, and prints phase and epoch
lines as they come.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from vfl.config.coordinator import load_coordinator_config
from vfl.errors import Interrupted, VflError

_STEP = re.compile(r"epoch (\d+) step (\d+)/(\d+)")
_PSI = re.compile(r"PSI (\w+) (\d+)/(\d+)")
_ECHO = ("phase", "handshake", "epoch", "done:", "joined")


@dataclass(frozen=True)
class RunFiles:
    """The configs of one federated run: the coordinator's, the job's and each party's, keyed
    by the party's short name (``e``, then its passive parties ``p``, ``l``: also the names
    of their logs and work directories)."""

    coordinator: Path
    job: Path
    parties: dict[str, Path]

    @property
    def e(self) -> Path:
        """E's config."""
        return self.parties["e"]

    @property
    def processes(self) -> int:
        """The run's OS processes: the coordinator and one per party."""
        return 1 + len(self.parties)


@dataclass
class FederatedRun:
    """A finished run: wall seconds, what the coordinator printed, E's metrics."""

    seconds: float
    coordinator_log: str
    metrics: dict[str, Any] = field(default_factory=dict)
    processes: int = 3  # the coordinator's and one per party

    def coordinator_saw(self) -> list[str]:
        """The coordinator's byte counts per direction (all it learns besides timing)."""
        return [
            ln.strip() for ln in self.coordinator_log.splitlines() if "->" in ln and "bytes" in ln
        ]


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m vfl ARGS`` with its output in ``log``.

    Torch runs one intra-op thread (``OMP_NUM_THREADS=1``): three processes and the Paillier
    pools share this machine's cores, and torch's spinning threads would slow every step.
    """
    handle = log.open("wb")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "vfl", *args], stdout=handle, stderr=subprocess.STDOUT, env=env
    )


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _wait_listening(log: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "listening on" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise VflError(f"coordinator did not start; its log {log}:\n{_tail(log)}")


def run_federated(
    out: Path,
    files: RunFiles,
    *,
    seeds: dict[str, int],
    label: str,
    console: Console,
    timeout: float,
) -> FederatedRun:
    """Start the coordinator, the passive parties and E; follow them to the end; return E's
    metrics.

    ``seeds`` are the parties' ``--local-seed`` (their own secret initial weights): the pilot
    passes the same ones to its plaintext and encrypted runs so both train the same model.

    Raises:
        VflError: a process failed (with its log's tail) or the run exceeded ``timeout``.
    """
    out.mkdir(parents=True, exist_ok=True)
    order = [k for k in files.parties if k != "e"] + ["e"]  # passive parties first
    _drop_checkpoints(out, order, load_coordinator_config(files.coordinator).coordinator.state)
    logs = {k: out / f"{k}.log" for k in ("coordinator", *order)}
    t0 = time.perf_counter()
    coord = _start(["coordinator", "--config", str(files.coordinator)], logs["coordinator"])
    parties: dict[str, subprocess.Popen[bytes]] = {}
    commands = {"coordinator": ["coordinator", "--config", str(files.coordinator)]}
    for k in order:
        commands[k] = ["party", "--config", str(files.parties[k]), "--out", str(out / k)]
        commands[k] += ["--local-seed", str(seeds[k])]
    try:
        _wait_listening(logs["coordinator"], coord, 30)
        for k in order:
            parties[k] = _start(commands[k], logs[k])
        _follow(parties, logs, label, console, timeout)
    except Interrupted as stop:
        _stop_all([*parties.values(), coord])
        raise stop.again(_resume_text(stop, label, out, commands)) from None
    finally:
        _stop_all([*parties.values(), coord])
    metrics = json.loads((out / "e" / "metrics.json").read_text())
    coord_log = logs["coordinator"].read_text(errors="replace")
    return FederatedRun(time.perf_counter() - t0, coord_log, metrics, files.processes)


def _stop_all(procs: list[subprocess.Popen[bytes]], grace_s: float = 30.0) -> None:
    """SIGTERM each process still running (parties first), wait for it, SIGKILL if it hangs.

    A party stops cleanly on SIGTERM: it tells the coordinator, keeps its checkpoints and
    exits (``vfl party``); the coordinator keeps its state file.
    """
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)


def _resume_text(stop: Interrupted, label: str, out: Path, commands: dict[str, list[str]]) -> str:
    """What an interrupted run kept and the commands that resume it."""
    shown = {k: "vfl " + " ".join(args) for k, args in commands.items()}
    parties = [k for k in commands if k != "coordinator"]
    names = ", ".join(k.upper() for k in parties)
    kept = " and ".join(str(out / k / "checkpoints") for k in parties)
    then = " and ".join(f"`{shown[k]}`" for k in parties)
    return (
        f"{stop} during the VFL {label} run; its coordinator and parties {names} were stopped, "
        f"their checkpoints kept in {kept}. Fix: to resume that run, start "
        f"`{shown['coordinator']}`, then {then} (logs in {out}); `vfl pilot` again starts a "
        "fresh pilot"
    )


def _drop_checkpoints(
    out: Path, parties: list[str] | None = None, coordinator_state: Path | None = None
) -> None:
    """Remove the parties' checkpoints (by default E's and P's) left by an earlier pilot in
    ``out``, and the coordinator's state file ``coordinator_state`` (which parties finished).

    A pilot is a fresh experiment on freshly written data, certificates and seeds; a party
    that found the last pilot's finished checkpoints would resume them (SPEC §8) and report
    the old model instead of training, and a coordinator that found an interrupted pilot's
    state could show a party as done before it joins. Resuming a killed ``vfl party`` or
    ``vfl coordinator`` is unaffected.
    """
    for party in parties or ["e", "p"]:
        shutil.rmtree(out / party / "checkpoints", ignore_errors=True)
        for partner in (out / party / "partners").glob("*/checkpoints"):
            shutil.rmtree(partner, ignore_errors=True)
    if coordinator_state is not None:
        coordinator_state.unlink(missing_ok=True)


def _follow(
    parties: dict[str, subprocess.Popen[bytes]],
    logs: dict[str, Path],
    label: str,
    console: Console,
    timeout: float,
) -> None:
    """Wait for every party, drawing bars; the first failure stops the pilot with its log."""
    deadline = time.monotonic() + timeout
    bars = _Bars(label, console)
    with bars.progress:
        while time.monotonic() < deadline:
            bars.update(logs)
            codes = {k: p.poll() for k, p in parties.items()}
            failed = [k for k, c in codes.items() if c not in (None, 0)]
            if failed:
                k = failed[0]
                raise VflError(
                    f"{label}: party {k.upper()} exited with code {codes[k]}; log {logs[k]}:\n"
                    f"{_tail(logs[k])}"
                )
            if all(c == 0 for c in codes.values()):
                bars.update(logs)
                return
            time.sleep(0.5)
    raise VflError(f"{label}: the parties did not finish within {timeout:.0f} s; see {logs['e']}")


class _Bars:
    """Progress bars from the parties' log lines: PSI stages and each epoch's batches."""

    def __init__(self, label: str, console: Console) -> None:
        self.label = label
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.shown: dict[str, int] = {}

    def _bar(self, name: str, done: int, total: int) -> None:
        key = f"{self.label} {name}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(key, total=total)
        self.progress.update(self.tasks[key], completed=done, total=total)

    def update(self, logs: dict[str, Path]) -> None:
        """Read new lines of the parties' logs."""
        for k, log in logs.items():
            if k == "coordinator":
                continue
            lines = log.read_text(errors="replace").splitlines()
            for line in lines[self.shown.get(k, 0) :]:
                self._line(k, line.strip())
            self.shown[k] = len(lines)

    def _line(self, k: str, line: str) -> None:
        step = _STEP.search(line)
        psi = _PSI.search(line)
        if step and k == "e":
            self._bar(f"epoch {step.group(1)} batches", int(step.group(2)), int(step.group(3)))
        elif psi:
            self._bar(f"{k.upper()} PSI {psi.group(1)}", int(psi.group(2)), int(psi.group(3)))
        elif any(w in line for w in _ECHO):
            self.progress.console.print(f"  {self.label} {k.upper()}| {line}")
