"""The full pilot as a user runs it: three real OS processes (coordinator, E, P) talking gRPC
with mutual TLS over loopback -- PSI, encrypted training, evaluation -- plus the baselines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_pilot_runs_three_processes_and_reports(tmp_path: Path) -> None:
    # Execute (small data and 512-bit test keys; the default is 2048 bits)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vfl",
            "pilot",
            "--out",
            str(tmp_path / "pilot"),
            "--users",
            "300",
            "--epochs",
            "2",
            "--key-bits",
            "512",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    # Assert
    assert done.returncode == 0, done.stderr
    out = tmp_path / "pilot"
    results = json.loads((out / "pilot.json").read_text())
    assert set(results["models"]) == {
        "e_alone",
        "split_plaintext",
        "centralised",
        "split_encrypted",
    }
    secure = results["models"]["split_encrypted"]
    assert len(secure["loss_curve"]) == 2 and secure["cost_of_privacy"] > 1
    assert results["federated"]["key_bits"] == 512
    # all the coordinator learnt: byte counts per direction
    saw = results["federated"]["coordinator_saw"]
    assert len(saw) == 2 and all("bytes" in line for line in saw)
    # each party persisted the same alignment; only E holds metrics
    e_al = json.loads((out / "e" / "alignment.json").read_text())
    p_al = json.loads((out / "p" / "alignment.json").read_text())
    assert e_al["ids"] == p_al["ids"] and len(e_al["ids"]) == results["aligned_users"]
    assert (out / "e" / "metrics.json").exists() and not (out / "p" / "metrics.json").exists()
    assert "split_encrypted" in (out / "report.md").read_text()
