"""A supervisor for fault tests and the soak benchmark: real coordinator, E and P processes,
kill -9 at chosen moments, restart with the same command, compare with an uninterrupted run.

The supervisor does what an operator (or systemd ``Restart=on-failure``) does: a killed
process is started again at once with its usual command, and so is any party that stops
with an error (a survivor stops when its peer vanished or restarted). A party that exits
with 0 has finished.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers import accept_test_keys
from tests.timing import scaled
from vfl.checkpoint import Checkpoint, decode, file_name
from vfl.cli.netconfig import NetworkLayout, write_network_configs
from vfl.data.party_files import dumps_toml
from vfl.data.synthetic_writer import generate_synthetic
from vfl.errors import CheckpointError
from vfl.faults import ENV as PAUSE_ENV
from vfl.party.export import load_pair
from vfl.phases import Phase
from vfl.transport.certs import generate_dev_pki
from vfl.transport.sealing import write_box_keys

ROOT = Path(__file__).resolve().parents[1]
SEEDS = {"e": 11, "p": 22}
PARTY = {"e": "shop", "p": "payments"}
_CKPT = re.compile(r"^\d{2}-([a-z]+)-(\d{10})\.vflckpt$")
MAX_RESTARTS = 25


def start_process(
    k: str,
    config: Path,
    root: Path,
    log: Path,
    *,
    seed: int | None,
    pause: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m vfl coordinator`` (``k`` = ``coordinator``) or ``python -m vfl party`` with
    work directory ``root/k`` and ``--local-seed seed``, in its own process group (its worker
    pools die with it), stdout and stderr to ``log``; ``pause``: ``VFL_PAUSE_AT`` for this
    start only (:mod:`vfl.faults`); ``env``: further variables."""
    if k == "coordinator":
        args = ["coordinator", "--config", str(config)]
    else:
        args = ["party", "--config", str(config), "--out", str(root / k)]
        args += [] if seed is None else ["--local-seed", str(seed)]
    full = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    if pause is not None:
        full[PAUSE_ENV] = pause
    with log.open("wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "vfl", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=full,
            start_new_session=True,
        )


def wait_listening(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the coordinator writing ``log`` listens; fails if it exits or takes 30 s (scaled)."""
    deadline = time.monotonic() + scaled(30)
    while "listening on" not in (text := log.read_text(errors="replace") if log.exists() else ""):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"coordinator did not start:\n{text}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Kill:
    """Kill ``victim`` (``e``, ``p`` or ``coordinator``) ``delay`` s after ``when`` holds.

    ``may_miss``: the moment is so short that the victim may have exited (with 0) first.
    ``pause``: ``(process, "point=seconds")``, set for each start of that process while this
    kill is the next one due (:mod:`vfl.faults`), so ``when`` can wait for the pause line.
    """

    victim: str
    when: Callable[[Job], bool]
    delay: float = 0.0
    label: str = ""
    may_miss: bool = False
    pause: tuple[str, str] | None = None


@dataclass
class Outcome:
    """What happened in one supervised run."""

    kills: list[tuple[str, str]] = field(default_factory=list)  # (victim, label)
    missed: list[tuple[str, str]] = field(default_factory=list)
    phases: list[tuple[str, str]] = field(default_factory=list)  # (victim, phase seen)
    missed_kills: list[Kill] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=lambda: {"e": 0, "p": 0, "coordinator": 0})
    wall_s: float = 0.0

    @property
    def resumes(self) -> int:
        """Party process starts after the first one (each resumed from its checkpoints)."""
        return self.restarts["e"] + self.restarts["p"]


class Job:
    """A prepared job directory and its three processes."""

    def __init__(
        self, root: Path, *, epochs: int = 2, timeout_s: float = 8.0, p_only_users: int = 0
    ) -> None:
        self.root, self.epochs = root, epochs
        self.spe = 0  # steps per epoch, when known (tells training from evaluation)
        self.files = _prepare(root, epochs=epochs, timeout_s=timeout_s)
        if p_only_users:
            _add_p_only_users(self.files["p"].parent / "p_users.csv", p_only_users)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.runs: dict[str, int] = {"e": 0, "p": 0, "coordinator": 0}
        self.done: set[str] = set()
        self._marks: dict[str, tuple[int, int]] = {}  # at the last kill: (run, log length)
        self.last_kill_at = time.monotonic()
        self.step_at_kill = -1  # E's newest training step when the last kill was made
        self.pauses: dict[str, str] = {}  # k -> VFL_PAUSE_AT for k's next start only
        self.hold: tuple[str, str] | None = None  # the next kill's pause: (k, VFL_PAUSE_AT)

    # -- processes ---------------------------------------------------------------------------

    def log_path(self, k: str, run: int | None = None) -> Path:
        return self.root / f"{k}.{self.runs[k] if run is None else run}.log"

    def log(self, k: str, run: int | None = None) -> str:
        path = self.log_path(k, run)
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self, k: str) -> str:
        return "".join(self.log(k, r) for r in range(1, self.runs[k] + 1))

    def start(self, k: str) -> None:
        self.runs[k] += 1
        config = self.files["coordinator" if k == "coordinator" else k]
        seed = None if k == "coordinator" else SEEDS[k]
        pause = self.pauses.pop(k, None)
        if pause is None and self.hold is not None and self.hold[0] == k:
            pause = self.hold[1]
        self.procs[k] = start_process(
            k, config, self.root, self.log_path(k), seed=seed, pause=pause
        )
        if k == "coordinator":
            wait_listening(self.procs[k], self.log_path(k))

    def kill(self, k: str) -> bool:
        """kill -9 ``k`` if it runs; True if it did."""
        proc = self.procs[k]
        if proc.poll() is not None:
            return False
        os.killpg(proc.pid, signal.SIGKILL)  # the process and its worker pool, as in a crash
        proc.wait(timeout=10)
        self._marks = {p: (self.runs[p], len(self.log(p))) for p in ("e", "p")}
        self.last_kill_at = time.monotonic()
        self.step_at_kill = self.train_step("e")
        return True

    def seed_alignment(self, other: Job) -> None:
        """Start from ``other``'s PSI result (alignment checkpoints and ``alignment.json``)."""
        for k in ("e", "p"):
            (self.root / k / "checkpoints").mkdir(parents=True, exist_ok=True)
            name = file_name(Phase.ALIGNMENT, 0)
            shutil.copy(other.root / k / "checkpoints" / name, self.root / k / "checkpoints")
            shutil.copy(other.root / k / "alignment.json", self.root / k)  # the PSI store's

    def seed_trained(self, other: Job) -> None:
        """Start from ``other``'s trained state: its alignment and training checkpoints, so
        both parties resume at the last step and go on to evaluation and export."""
        self.seed_alignment(other)
        for k in ("e", "p"):
            for phase, step in other.positions(k):
                if phase == Phase.TRAIN.value:
                    name = file_name(Phase.TRAIN, step)
                    shutil.copy(
                        other.root / k / "checkpoints" / name, self.root / k / "checkpoints"
                    )

    def phase_of(self, k: str) -> str:
        """The phase ``k`` (the coordinator: E, or P once E is gone) is in right now."""
        if k == "coordinator":
            k = "e" if "e" not in self.done else "p"
        marks = (
            "joined job",
            "handshake with",
            "phase psi",
            "phase train",
            "phase export",
            "done:",
        )
        text = self.log(k)
        last = max(marks, key=lambda m: text.rfind(m))
        if text.rfind(last) < 0 or last in ("joined job", "handshake with"):
            return "handshake"
        if last in ("phase export", "done:"):
            return "export"
        return "psi" if last == "phase psi" else self._training_phase()

    def _training_phase(self) -> str:
        """train, eval (an epoch trained, not yet evaluated) or export (all evaluated)."""
        try:
            loop = self.newest("e", Phase.TRAIN).meta["loop"]
        except (AssertionError, FileNotFoundError, CheckpointError):
            return "train"
        if loop["epoch"] > self.epochs:
            return "export"
        return "eval" if self.spe and loop["position"] >= self.spe else "train"

    def logged_since_kill(self, k: str, text: str) -> bool:
        """``text`` was logged by ``k`` after the last kill (by any of its runs)."""
        run, offset = self._marks.get(k, (0, 0))
        if self.runs[k] > run:
            return any(text in self.log(k, r) for r in range(run + 1, self.runs[k] + 1))
        return text in self.log(k)[offset:]

    def stop_all(self) -> None:
        """Kill every process group still there (a failed test leaves nothing behind)."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    # -- what the parties have done ----------------------------------------------------------

    def positions(self, k: str) -> list[tuple[str, int]]:
        directory = self.root / k / "checkpoints"
        names = os.listdir(directory) if directory.is_dir() else []
        return [(m.group(1), int(m.group(2))) for n in names if (m := _CKPT.match(n))]

    def trained_since_kill(self, step: int) -> bool:
        """E has checkpointed ``step`` or later, and a step it made after the last kill."""
        now = self.train_step("e")
        return now >= step and now > self.step_at_kill

    def train_step(self, k: str = "e") -> int:
        """The newest training step ``k`` checkpointed (-1: none)."""
        return max((s for p, s in self.positions(k) if p == "train"), default=-1)

    def has(self, k: str, phase: str) -> bool:
        return any(p == phase for p, _ in self.positions(k))

    def newest(self, k: str, phase: Phase) -> Checkpoint:
        """``k``'s newest checkpoint of ``phase``, digest-checked."""
        steps = [s for p, s in self.positions(k) if p == phase.value]
        assert steps, f"{k} has no {phase.value} checkpoint"
        path = self.root / k / "checkpoints" / file_name(phase, max(steps))
        ckpt = decode(path.read_bytes(), str(path))
        assert (ckpt.job_id, ckpt.party) == ("fault-test", PARTY[k])
        return ckpt

    # -- supervision -------------------------------------------------------------------------

    def supervise(self, kills: list[Kill], *, timeout: float, seed: int = 0) -> Outcome:
        """Run to completion, killing as planned and restarting whatever stopped."""
        out, began = Outcome(), time.monotonic()
        rng = random.Random(seed)
        pending, due = list(kills), None
        self.last_kill_at = began
        self._arm(pending)
        self.start("coordinator")
        self.start("p")
        self.start("e")
        while self.done != {"e", "p"}:
            if time.monotonic() - began > scaled(timeout):
                raise AssertionError(f"job not done after {scaled(timeout)} s; {self._tails()}")
            self._reap(out)
            if pending and due is None and pending[0].when(self):
                due = time.monotonic() + pending[0].delay * (0.5 + rng.random())
            if pending and due is not None and time.monotonic() >= due:
                kill = pending.pop(0)
                self._arm(pending)  # before the victim's restart, which may be the one held
                self._execute(kill, out)
                due = None
            time.sleep(0.02)
        out.missed += [(k.victim, k.label) for k in pending]
        out.missed_kills += pending
        out.wall_s = time.monotonic() - began
        return out

    def _arm(self, pending: list[Kill]) -> None:
        """Hold at the pause point of the next kill due (if any) each start of its process."""
        self.hold = pending[0].pause if pending else None

    def _execute(self, kill: Kill, out: Outcome) -> None:
        phase = self.phase_of(kill.victim)
        if kill.victim in self.done or not self.kill(kill.victim):
            out.missed.append((kill.victim, kill.label))
            out.missed_kills.append(kill)
            return
        out.kills.append((kill.victim, kill.label))
        out.phases.append((kill.victim, phase))
        out.restarts[kill.victim] += 1
        self.start(kill.victim)

    def _reap(self, out: Outcome) -> None:
        for k in ("e", "p"):
            if k in self.done or k not in self.procs:
                continue
            code = self.procs[k].poll()
            if code == 0:
                self.done.add(k)
            elif code is not None:
                if "Traceback" in self.log(k):
                    raise AssertionError(f"{k} crashed with a traceback:\n{self.log(k)}")
                if out.restarts[k] >= MAX_RESTARTS:
                    raise AssertionError(f"{k} restarted {MAX_RESTARTS} times; {self._tails()}")
                out.restarts[k] += 1
                self.start(k)
        if self.procs["coordinator"].poll() is not None:
            out.restarts["coordinator"] += 1
            self.start("coordinator")

    def _tails(self) -> str:
        return "\n".join(f"--- {k} (run {self.runs[k]}):\n{self.log(k)[-2500:]}" for k in self.runs)


# -- setup and comparison ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _prepare(root: Path, *, epochs: int, timeout_s: float) -> dict[str, Path]:
    """Tiny synthetic data, a 512-bit plan, dev PKI, configs with short timeouts."""
    data = root / "data"
    generate_synthetic(data, users=120, items=80, overlap=0.8, seed=5)
    job = data / "job.toml"
    table = tomllib.loads(job.read_text())
    table["job"]["name"] = "fault-test"
    table.setdefault("train", {}).update(
        {"epochs": epochs, "key_bits": 512, "users_per_step": 8, "learning_rate": 0.01}
    )
    table.setdefault("eval", {})["test_negatives"] = 20
    job.write_text(dumps_toml(table))
    certs = root / "certs"
    generate_dev_pki(certs, parties=list(PARTY.values()))
    for name in PARTY.values():
        write_box_keys(certs, name)
    files = {"e": data / "e_party.toml", "p": data / "p_party.toml"}
    accept_test_keys(files["e"], files["p"])  # each party's own floor, lowered for 512 bits
    layout = NetworkLayout(
        certs, ("shop", "payments"), port=_free_port(), job_file=job, timeout_s=timeout_s
    )
    written = write_network_configs(layout, {"shop": files["e"], "payments": files["p"]})
    for k in ("e", "p"):
        cfg = tomllib.loads(files[k].read_text())
        cfg["network"].update({"heartbeat_s": 0.5, "lost_after_s": 2.5})
        files[k].write_text(dumps_toml(cfg))
    return {**files, "coordinator": written["coordinator"]}


def _add_p_only_users(path: Path, n: int) -> None:
    """Append ``n`` users only P has (copies of its first row), so PSI lasts a while."""
    lines = path.read_text().splitlines()
    first = lines[1].split(",")
    extra = [",".join([f"payonly{i:06d}@example.com", *first[1:]]) for i in range(n)]
    path.write_text("\n".join([*lines, *extra]) + "\n")


@dataclass(frozen=True)
class Model:
    """What a finished job produced: every step's loss, the metrics, the trained shards."""

    losses: np.ndarray
    metrics: dict[str, float]
    w_b: np.ndarray  # (U + V) / S
    head: dict[str, np.ndarray]
    bottom: dict[str, np.ndarray]


def final_model(job: Job) -> Model:
    """Read both parties' exported shards (``<work dir>/model``, checked against each other's
    manifests) and E's losses and metrics (the test may read both work directories)."""
    e, p = load_pair(job.root / "e" / "model", job.root / "p" / "model")
    evaluated, train = job.newest("e", Phase.EVAL), job.newest("e", Phase.TRAIN)
    (u, w_bits), (v, _) = e.share(), p.share()
    w_b = np.array([int(x) / 2**w_bits for x in (u + v).ravel()]).reshape(u.shape)

    def tensors(state: dict[str, Any]) -> dict[str, np.ndarray]:
        return {k: t.numpy().copy() for k, t in state.items()}

    row = evaluated.meta["metrics"]["split_encrypted"]
    metrics = {k: float(row[k]) for k in ("auc", "hr@10", "ndcg@10", "logloss")}
    return Model(
        losses=np.array(train.meta["loop"]["losses"]),
        metrics=metrics,
        w_b=w_b,
        head=tensors(e.state_dict("head.pt")),
        bottom=tensors(p.state_dict("bottom.pt")),
    )


LOSS_TOL = 1e-5  # float32 losses of bit-identical inputs; U + V is exact (integers)
W_TOL = 1e-9  # W_B = (U + V) / 2^60: the fixed-point shares sum exactly
PARAM_TOL = 1e-5


def mismatches(got: Model, want: Model) -> list[str]:
    """What differs between two finished runs beyond the stated tolerances (empty: same)."""
    bad = []
    if got.losses.shape != want.losses.shape or np.abs(got.losses - want.losses).max() > LOSS_TOL:
        bad.append(f"losses differ: {got.losses} vs {want.losses}")
    bad += [
        f"metric {k}: {got.metrics[k]} vs {v}"
        for k, v in want.metrics.items()
        if abs(got.metrics[k] - v) > 1e-4
    ]
    if np.abs(got.w_b - want.w_b).max() > W_TOL:
        bad.append(f"W_B differs by {np.abs(got.w_b - want.w_b).max():.3g}")
    for name, mine, theirs in (("head", got.head, want.head), ("bottom", got.bottom, want.bottom)):
        bad += [
            f"{name}.{k} differs by {np.abs(mine[k] - v).max():.3g}"
            for k, v in theirs.items()
            if np.abs(mine[k] - v).max() > PARAM_TOL
        ]
    return bad


def steps_per_epoch(reference: Job, epochs: int) -> int:
    """Training steps in one epoch of the job (from the uninterrupted run)."""
    return len(final_model(reference).losses) // epochs
