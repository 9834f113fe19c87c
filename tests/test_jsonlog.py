"""``vfl --log-format json``: a real coordinator's output is one JSON event per line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.timing import scaled

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _events(text: str) -> list[dict[str, object]]:
    """Every line of ``text`` parsed as JSON (fails on any line that is not)."""
    return [json.loads(line) for line in text.splitlines()]


def test_coordinator_writes_one_json_event_per_line(tmp_path: Path) -> None:
    # Prepare
    subprocess.run(
        [sys.executable, "-m", "vfl", "certs", "--out", "certs", "--port", str(_free_port())],
        cwd=tmp_path, env=ENV, check=True, capture_output=True, timeout=scaled(60),
    )  # fmt: skip
    log = tmp_path / "c.log"

    # Execute: listening, then a clean stop on SIGTERM
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vfl", "--log-format", "json", "coordinator", "--config",
             "certs/coordinator.toml"],
            cwd=tmp_path, env=ENV, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + scaled(30)
            while "listening on" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=scaled(30)) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # Assert
    events = _events(log.read_text())
    print(events)
    assert any("listening on" in str(e["message"]) for e in events)
    assert any("bytes relayed" in str(e["message"]) for e in events)
    for event in events:
        assert event["process"] == "coordinator" and event["level"] == "info"
        assert {"ts", "pid", "stream"} <= event.keys()


@pytest.mark.parametrize("how", ["option", "env"])
def test_errors_are_json_events_too(tmp_path: Path, how: str) -> None:
    args = ["status", "--config", "missing.toml"]
    env = dict(ENV)
    if how == "option":
        args = ["--log-format", "json", *args]
    else:
        env["VFL_LOG_FORMAT"] = "json"
    done = subprocess.run(
        [sys.executable, "-m", "vfl", *args], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=scaled(60),
    )  # fmt: skip
    assert done.returncode == 2
    (event,) = _events(done.stderr)
    assert event["level"] == "error" and "missing.toml" in str(event["message"])
