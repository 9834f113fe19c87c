"""kill -9 of any of the four processes (coordinator, E, P, L) in the handshake, in PSI, in
training and in the export, with two partners: each killed process is restarted with its own
command, as an operator or systemd would, and so is any party that stops with an error
because its peer vanished; the job resumes to the model of the uninterrupted run (E's loss
curve and test metrics)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.fault_harness import start_process, wait_listening
from tests.timing import scaled
from vfl.cli.pilot_cmd import Dataset, pilot_train, write_run_configs
from vfl.data.formats import dumps_toml
from vfl.data.synthetic_writer import generate_synthetic

SEEDS = {"e": 11, "p": 22, "l": 33}
MAX_RESTARTS = 10
TIMEOUT_S = 8.0  # network.timeout_s of each party, as in tests/fault_harness.py
# the handshake and the export's messages take milliseconds: the victim (for the coordinator:
# E) is held at a pause point (vfl.faults) on its first start: in the handshake after sending
# its hello; in the export E after sending its summary, a passive party after writing its
# manifest
PAUSES = {
    "handshake": dict.fromkeys("epl", "handshake.hello_sent"),
    "export": {
        "e": "export.summary_sent",
        "p": "export.manifest_written",
        "l": "export.manifest_written",
    },
}
# when to kill: the line that must appear in E's log (when held: in the held party's log)
MOMENTS = {
    "handshake": "pause point handshake.",
    "psi": "phase psi",
    "train": "epoch 1 step",
    "export": "pause point export.",
}


class Run:
    """One job directory: the coordinator and the three parties as OS processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        generate_synthetic(root / "data", users=120, items=200, seed=3, third_party=0.5)
        train = pilot_train(Dataset.SYNTHETIC, epochs=2, patience=2, key_bits=512)
        self.files = write_run_configs(root, train, plaintext=False, parties=3)["encrypted"]
        for config in self.files.parties.values():  # a message lost with a killed relay
            table = tomllib.loads(config.read_text())  # times out in seconds, then resumes
            table["network"]["timeout_s"] = TIMEOUT_S
            config.write_text(dumps_toml(table))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.runs = {k: 0 for k in ("coordinator", "e", "p", "l")}
        self.restarts = 0
        self.pauses: dict[str, str] = {}  # k -> VFL_PAUSE_AT for k's next start only

    def log(self, k: str) -> str:
        path = self.root / f"{k}.{self.runs[k]}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, k: str) -> None:
        self.runs[k] += 1
        config = self.files.coordinator if k == "coordinator" else self.files.parties[k]
        log = self.root / f"{k}.{self.runs[k]}.log"
        seed = SEEDS.get(k)
        pause = self.pauses.pop(k, None)
        self.procs[k] = start_process(k, config, self.root, log, seed=seed, pause=pause)
        if k == "coordinator":
            wait_listening(self.procs[k], log)

    def kill(self, k: str) -> None:
        os.killpg(self.procs[k].pid, signal.SIGKILL)
        self.procs[k].wait()

    def supervise(self, victim: str | None, moment: str = "train") -> dict[str, object]:
        """Run to the end, killing ``victim`` once at ``moment`` (:data:`MOMENTS`). In the
        handshake and the export the victim (the coordinator: E) is held at its point of
        :data:`PAUSES` on its first start."""
        watched = "e"
        if victim is not None and moment in PAUSES:
            watched = "e" if victim == "coordinator" else victim
            self.pauses[watched] = f"{PAUSES[moment][watched]}=10"
        self.start("coordinator")
        for k in ("p", "l", "e"):
            self.start(k)
        done: set[str] = set()
        killed = victim is None
        deadline = time.monotonic() + scaled(600)
        try:
            while done != {"e", "p", "l"}:
                assert time.monotonic() < deadline, self.log("e")[-3000:]
                if not killed and MOMENTS[moment] in self.log(watched):
                    self.kill(victim)  # type: ignore[arg-type]
                    killed = True
                    self.restarts += 1
                    self.start(victim)  # type: ignore[arg-type]
                for k in ("p", "l", "e"):
                    code = self.procs[k].poll() if k not in done else 0
                    if code == 0:
                        done.add(k)
                    elif code is not None:  # a survivor stopped: restart it, as an operator
                        self.restarts += 1
                        assert self.restarts <= MAX_RESTARTS, self.log(k)[-3000:]
                        self.start(k)
                if self.procs["coordinator"].poll() is not None:
                    self.start("coordinator")
                time.sleep(0.1)
        finally:
            for proc in self.procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        assert killed
        metrics: dict[str, object] = json.loads((self.root / "e" / "metrics.json").read_text())
        return metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return Run(tmp_path_factory.mktemp("reference")).supervise(None)


@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("victim", ["l", "p", "e", "coordinator"])
def test_kill_9_resumes_to_the_uninterrupted_model(
    victim: str, moment: str, reference: dict[str, object], tmp_path: Path
) -> None:
    # Execute
    run = Run(tmp_path)
    got = run.supervise(victim, moment)
    # Assert: the same model as the uninterrupted run, and each partner exported its shard
    want_m, got_m = reference["split_encrypted"], got["split_encrypted"]
    assert isinstance(want_m, dict) and isinstance(got_m, dict)
    assert got_m["loss_curve"] == pytest.approx(want_m["loss_curve"], abs=1e-9)
    for key in ("auc", "hr@10", "ndcg@10"):
        assert got_m[key] == pytest.approx(want_m[key], abs=1e-9), key
    assert run.runs[victim] >= 2
    if moment == "handshake":  # killed while held in its first handshake (C: while E was)
        held = "e" if victim == "coordinator" else victim
        first = (tmp_path / f"{held}.1.log").read_text(errors="replace")
        assert "pause point handshake.hello_sent" in first
        assert victim == "coordinator" or "phase psi" not in first
    for partner in ("payments", "logistics"):
        assert (tmp_path / "e" / "partners" / partner / "model" / "manifest.json").is_file()
    for k in ("p", "l"):
        assert (tmp_path / k / "model" / "manifest.json").is_file(), k
