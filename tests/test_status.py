"""``vfl status``: the coordinator's board over the parties' mutual TLS, during a real run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import accept_test_keys
from tests.timing import scaled
from vfl.data.formats import dumps_toml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _vfl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vfl", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
        timeout=scaled(60),
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small synthetic data, a 512-bit plan with many epochs (the run is stopped early)."""
    root = tmp_path_factory.mktemp("status")
    assert (
        _vfl(root, "data", "synth", "--out", "data", "--users", "120", "--items", "150").returncode
        == 0
    )
    plan = tomllib.loads((root / "data" / "job.toml").read_text())
    plan["train"].update({"epochs": 50, "key_bits": 512, "users_per_step": 16})
    (root / "data" / "job.toml").write_text(dumps_toml(plan))
    accept_test_keys(root / "data" / "e_party.toml", root / "data" / "p_party.toml")
    done = _vfl(root, "certs", "--out", "certs", "--port", str(_free_port()), "--job",
                "data/job.toml", "--party-config", "data/e_party.toml",
                "--party-config", "data/p_party.toml")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root


def _status(root: Path) -> dict[str, Any]:
    done = _vfl(root, "status", "--config", "data/e_party.toml", "--json")
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@pytest.fixture()
def processes(job: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def _start(root: Path, procs: dict[str, subprocess.Popen[bytes]], name: str, *args: str) -> None:
    log = (root / f"{name}.log").open("wb")
    procs[name] = subprocess.Popen(
        [sys.executable, "-m", "vfl", *args], cwd=root, env=ENV, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def _wait_log(root: Path, name: str, words: str) -> None:
    deadline = time.monotonic() + scaled(30)
    while time.monotonic() < deadline:
        if words in (root / f"{name}.log").read_text():
            return
        time.sleep(0.1)
    pytest.fail(f"{name} never logged '{words}'")


def test_status_shows_job_phase_epoch_and_parties_during_a_run(
    job: Path, processes: dict[str, subprocess.Popen[bytes]]
) -> None:
    # Prepare: the coordinator alone
    _start(job, processes, "c", "coordinator", "--config", "certs/coordinator.toml")
    _wait_log(job, "c", "listening on")
    before = _status(job)

    # Execute: both parties, then status until E publishes its first epoch
    for k, cfg in (("p", "data/p_party.toml"), ("e", "data/e_party.toml")):
        _start(job, processes, k, "party", "--config", cfg, "--out", f"run-{k}")
    deadline = time.monotonic() + scaled(300)
    seen = before
    while time.monotonic() < deadline and "epoch" not in seen["parties"]["shop"]["progress"]:
        seen = _status(job)
        time.sleep(0.5)
    text = _vfl(job, "status", "--config", "data/p_party.toml").stdout

    # Assert
    print(before, seen, text, sep="\n")
    assert before["job"] == "synthetic" and before["parties"]["shop"]["last_heartbeat_s"] is None
    assert not before["parties"]["shop"]["connected"]  # asking is no heartbeat
    shop, payments = seen["parties"]["shop"], seen["parties"]["payments"]
    assert shop["connected"] and payments["connected"]
    assert shop["phase"] == "train" and shop["progress"]["epoch"] >= 1
    assert 0 <= shop["last_heartbeat_s"] < 5
    assert "2/2 connected" in text and "phase train" in text and "epoch=" in text


def test_status_names_an_unreachable_coordinator(job: Path) -> None:
    done = _vfl(job, "status", "--config", "data/e_party.toml", "--timeout", "2")
    assert done.returncode == 2
    assert "unreachable" in done.stderr and "Fix:" in done.stderr
    assert "Traceback" not in done.stderr
