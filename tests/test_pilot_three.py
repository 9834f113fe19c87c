"""``vfl pilot --parties 3`` as a user runs it: coordinator, E, P and L as four real OS
processes over gRPC with mutual TLS; every group of E's users scored, each partner's gain
reported, the encrypted and plaintext-mode runs the same model, and neither passive party
holding or printing anything of the other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.timing import scaled


@pytest.fixture(scope="module")
def pilot3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pilot3") / "pilot"
    cmd = [sys.executable, "-m", "vfl", "pilot", "--parties", "3", "--out", str(out)]
    cmd += ["--users", "300", "--epochs", "2", "--key-bits", "512"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(900))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_four_processes_train_the_same_model_encrypted_and_in_plaintext_mode(
    pilot3: Path,
) -> None:
    results = json.loads((pilot3 / "metrics.json").read_text())
    secure, plain = results["models"]["split_encrypted"], results["models"]["split_plaintext"]
    assert secure["processes"] == plain["processes"] == 4
    for log in ("coordinator", "e", "p", "l"):
        assert (pilot3 / f"{log}.log").is_file(), log
    for a, b in zip(plain["loss_curve"], secure["loss_curve"], strict=True):
        assert abs(a - b) < 1e-3
    assert abs(plain["auc"] - secure["auc"]) < 0.01
    # E kept one alignment and one shard per partner
    for partner in ("payments", "logistics"):
        assert (pilot3 / "e" / "partners" / partner / "alignment.json").is_file(), partner
        assert (pilot3 / "e" / "partners" / partner / "model" / "manifest.json").is_file()


def test_every_group_and_each_partners_gain_are_reported(pilot3: Path) -> None:
    results = json.loads((pilot3 / "metrics.json").read_text())
    groups = results["models"]["split_encrypted"]["groups"]
    assert set(groups) == {"known_to_all", "known_to_some", "e_only"}
    assert sum(g["test_users"] for g in groups.values()) == results["test_users"]
    assert 0 <= groups["e_only"]["hr@10"] <= 1 and groups["e_only"]["test_users"] > 0
    partners = results["partners"]
    assert set(partners["gain"]) == {"payments", "logistics"}
    runs = partners["runs"]
    full = runs["payments+logistics"]
    # the gain is the full run minus the run without that partner
    assert partners["gain"]["payments"]["auc"] == round(full["auc"] - runs["logistics"]["auc"], 4)
    # the in-process run with both partners is the federated model (same seeds, same order)
    assert abs(full["auc"] - results["models"]["split_plaintext"]["auc"]) < 1e-3
    report = (pilot3 / "report.md").read_text()
    assert "Gain of each partner's features" in report and "| logistics |" in report


def test_neither_passive_party_holds_or_prints_anything_of_the_other(pilot3: Path) -> None:
    e_psi = json.loads((pilot3 / "metrics.json").read_text())["psi"]["partners"]
    for me, other in (("p", "logistics"), ("l", "payments")):
        seen = [pilot3 / f"{me}.log", *(f for f in (pilot3 / me).rglob("*") if f.is_file())]
        for f in seen:
            assert other.encode() not in f.read_bytes(), f
        own = json.loads((pilot3 / me / "alignment.json").read_text())
        name = "payments" if me == "p" else "logistics"
        assert len(own["ids"]) == e_psi[name]  # its own intersection with E, nothing more
