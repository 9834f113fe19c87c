"""The full pilot as a user runs it: three real OS processes (coordinator, E, P) talking gRPC
with mutual TLS over loopback -- PSI, encrypted training, evaluation -- plus the baselines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.timing import scaled
from vfl.cli.pilot_cmd import plaintext_mode_available


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
        timeout=scaled(600),
    )
    # Assert
    assert done.returncode == 0, done.stderr
    out = tmp_path / "pilot"
    results = json.loads((out / "metrics.json").read_text())
    assert results == json.loads((out / "pilot.json").read_text())
    models = results["models"]
    assert list(models) == ["e_alone", "split_plaintext", "split_encrypted", "centralised"]
    secure = models["split_encrypted"]
    assert len(secure["loss_curve"]) == 2
    assert secure["processes"] == 3 and secure["bytes_received_by_e"] > 0
    plain = models["split_plaintext"]
    # the cost of privacy is encrypted over plaintext training time (at 512-bit test keys it
    # can be near 1; the 2048-bit figures are in the README)
    assert secure["cost_of_privacy"] == round(secure["wall_seconds"] / plain["wall_seconds"], 2)
    if plaintext_mode_available():  # VFL plaintext through the same three processes
        assert plain["processes"] == 3 and results["federated"]["same_local_seeds"]
        # same seeds, same aligned order: the same model up to the fixed-point error
        for a, b in zip(plain["loss_curve"], secure["loss_curve"], strict=True):
            assert abs(a - b) < 1e-3
        assert abs(plain["auc"] - secure["auc"]) < 0.01
        cost = results["cost_of_privacy"]
        assert {p["phase"] for p in cost["per_phase"]} >= {"psi", "epoch 1", "evaluation 2"}
        assert (out / "plaintext" / "e" / "model" / "manifest.json").is_file()
    for row in models.values():  # every model reports the cold-start users' metrics
        assert 0 < row["cold_start"]["auc"] < 1
        # and how it stopped: 2 epochs at most here, with its validation curve
        assert row["stopped"] == "max_epochs" and row["epochs_trained"] == 2
        assert len(row["valid_ndcg_curve"]) == 2 and row["best_epoch"] in (1, 2)
    assert results["patience"] == 3 and results["time_budget_s"] == 600
    assert results["federated"]["key_bits"] == 512
    # E's cost per phase, each epoch and evaluation separately
    phases = [p["phase"] for p in results["phases"]]
    assert phases[:3] == ["handshake", "psi", "alignment"] and phases[-1] == "export"
    assert {"epoch 1", "evaluation 1", "epoch 2", "evaluation 2"} <= set(phases)
    psi = results["psi"]
    assert psi["intersection"] == results["aligned_users"] <= min(psi["e_ids"], psi["p_ids"])
    # all the coordinator learnt: byte counts per direction
    saw = results["federated"]["coordinator_saw"]
    assert len(saw) == 2 and all("bytes" in line for line in saw)
    # each party persisted the same alignment and its own model shard; only E holds metrics
    e_al = json.loads((out / "e" / "alignment.json").read_text())
    p_al = json.loads((out / "p" / "alignment.json").read_text())
    assert e_al["ids"] == p_al["ids"] and len(e_al["ids"]) == results["aligned_users"]
    assert (out / "e" / "metrics.json").exists() and not (out / "p" / "metrics.json").exists()
    for k in ("e", "p"):
        assert (out / k / "model" / "manifest.json").is_file()
    # the report with its plots
    report = (out / "report.md").read_text()
    assert "split_encrypted" in report and "Cold-start" in report and "## PSI" in report
    assert "## Training to convergence" in report
    for png in ("loss_curves.png", "metrics.png", "phase_runs.png", "validation_curves.png"):
        assert (out / png).stat().st_size > 10_000, png


def test_a_new_pilot_drops_the_last_pilots_checkpoints_only(tmp_path: Path) -> None:
    # Prepare: what an earlier pilot leaves in a party's work directory and beside its
    # coordinator config (which parties finished)
    from vfl.cli.pilot_runs import _drop_checkpoints

    for party in ("e", "p"):
        (tmp_path / party / "checkpoints").mkdir(parents=True)
        (tmp_path / party / "checkpoints" / "train-000007.ckpt").write_bytes(b"old state")
        (tmp_path / party / "alignment.json").write_text("{}")
    state = tmp_path / "certs" / "pilot.coordinator-state.json"
    state.parent.mkdir()
    state.write_text('{"format": 1}')
    # Execute
    _drop_checkpoints(tmp_path, coordinator_state=state)
    # Assert: no party would resume the old run, nor the coordinator show it as done; the
    # alignment (reusable by PSI) stays
    assert not state.exists()
    for party in ("e", "p"):
        assert not (tmp_path / party / "checkpoints").exists()
        assert (tmp_path / party / "alignment.json").read_text() == "{}"


def test_the_pilot_keeps_the_secure_floor_unless_asked_for_test_keys(tmp_path: Path) -> None:
    # Prepare: the pilot's data, once with the default 2048-bit plan, once with --key-bits 512
    from vfl.cli.pilot_cmd import write_run_configs
    from vfl.config.party import load_party_config
    from vfl.data.synthetic_writer import generate_synthetic

    floors = {}
    for bits in (2048, 512):
        out = tmp_path / str(bits)
        generate_synthetic(out / "data", users=60, items=40, seed=1)
        # Execute
        files = write_run_configs(out, {"key_bits": bits}, plaintext=True)
        # Assert: every party config of both runs
        for run in files.values():
            for cfg in (load_party_config(f) for f in run.parties.values()):
                floors.setdefault(bits, set()).add(
                    (cfg.party.min_key_bits, cfg.party.allow_short_exponent)
                )
    assert floors == {2048: {(2048, False)}, 512: {(512, False)}}
