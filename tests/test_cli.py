"""The command line as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import accept_test_keys
from tests.timing import scaled


def vfl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m vfl ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "vfl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=scaled(600),
    )


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    done = vfl(
        "data",
        "synth",
        "--out",
        "data",
        "--users",
        "500",
        "--items",
        "200",
        "--seed",
        "3",
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    return root


def test_compare_writes_all_three_models(small_synthetic: Path) -> None:
    # Execute
    done = vfl(
        "compare", "--config", "data/job.toml", "--epochs", "6", "--out", "out", cwd=small_synthetic
    )
    # Assert
    assert done.returncode == 0, done.stderr
    report = json.loads((small_synthetic / "out" / "compare.json").read_text())
    assert set(report["models"]) == {"e_alone", "split_plaintext", "centralised"}
    assert report["test_users"] > 0 and report["aligned_users"] < 500  # partial overlap
    for row in report["models"].values():
        assert 0.0 <= row["hr@10"] <= 1.0 and 0.0 <= row["ndcg@10"] <= row["hr@10"]
        assert len(row["loss_curve"]) == row["epochs_trained"] == len(row["valid_ndcg_curve"])
        assert row["epochs_trained"] <= 6 and row["loss_curve"][-1] < row["loss_curve"][0]
        assert row["stopped"] in ("max_epochs", "patience") and row["best_epoch"] >= 1
        assert row["auc"] > 0.55  # every model learns something
    split = report["models"]["split_plaintext"]
    assert split["bytes_active_to_passive"] > 0 and split["bytes_passive_to_active"] > 0
    report_md = (small_synthetic / "out" / "report.md").read_text()
    assert all(name in report_md for name in report["models"])
    for png in ("loss_curves.png", "metrics.png"):
        assert (small_synthetic / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # progress lines: validation metrics only, never the test split's
    epoch_lines = [line for line in done.stderr.splitlines() if " epoch " in line]
    assert len(epoch_lines) == sum(r["epochs_trained"] for r in report["models"].values())
    assert all("valid" in line and "test" not in line for line in epoch_lines)
    # P's payment features carry signal E lacks, even on this small run.
    assert split["auc"] > report["models"]["e_alone"]["auc"]


def test_compare_over_seeds_reports_the_noise(small_synthetic: Path) -> None:
    # Execute
    done = vfl(
        "compare",
        "--config",
        "data/job.toml",
        "--epochs",
        "2",
        "--seeds",
        "2",
        "--out",
        "seeds",
        cwd=small_synthetic,
    )
    # Assert: each seed's rows, their mean and sample sd, and the table in the report
    assert done.returncode == 0, done.stderr
    report = json.loads((small_synthetic / "seeds" / "compare.json").read_text())
    seed = report["seed"]
    assert list(report["per_seed"]) == [str(seed), str(seed + 1)]
    for name, noise in report["noise"].items():
        values = [report["per_seed"][s][name]["hr@10"] for s in report["per_seed"]]
        assert noise["hr@10"]["mean"] == pytest.approx(sum(values) / 2, abs=1e-4)
        assert noise["hr@10"]["sd"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5, abs=1e-4)
    assert report["models"] == report["per_seed"][str(seed)]
    assert "mean ± sd over seeds" in done.stdout
    assert (
        "## Quality against standard models"
        in (small_synthetic / "seeds" / "report.md").read_text()
    )


def test_compare_encrypted_refuses_keys_below_a_partys_floor(small_synthetic: Path) -> None:
    # Prepare: 512-bit keys in the job, but the party configs keep the default 2048-bit floor
    data = small_synthetic / "data"
    job = (data / "job.toml").read_text()
    (data / "job_weak.toml").write_text(job.replace("[train]\n", "[train]\nkey_bits = 512\n"))
    # Execute
    done = vfl(
        "compare",
        "--config",
        "data/job_weak.toml",
        "--epochs",
        "1",
        "--encrypted",
        "--out",
        "weak",
        cwd=small_synthetic,
    )
    # Assert: refused by name (party, plan key, config key, fix), no traceback, no secure row
    assert done.returncode == 2, done.stderr
    assert "refuses the plan: train.key_bits = 512" in done.stderr
    assert "min_key_bits = 2048" in done.stderr and "e_party.toml" in done.stderr
    assert "Fix:" in done.stderr and "Traceback" not in done.stderr
    assert not (small_synthetic / "weak" / "compare.json").exists()


def test_bad_job_config_is_one_clear_line(small_synthetic: Path) -> None:
    bad = small_synthetic / "bad.toml"
    bad.write_text(
        '[parties]\nactive = "data/e_party.toml"\npassive = "data/p_party.toml"\n'
        '[train]\nepochs = "ten"\n'
    )
    done = vfl("compare", "--config", str(bad), cwd=small_synthetic)
    assert done.returncode == 2
    assert "bad.toml" in done.stderr and "train.epochs" in done.stderr
    assert "Fix:" in done.stderr and "Traceback" not in done.stderr


def test_compare_encrypted_adds_the_secure_row(small_synthetic: Path) -> None:
    # Prepare: the same job with small test keys (real runs use 2048 bits), and party
    # configs whose own floor accepts them
    data = small_synthetic / "data"
    for k in ("e", "p"):
        (data / f"{k}_party512.toml").write_text((data / f"{k}_party.toml").read_text())
        accept_test_keys(data / f"{k}_party512.toml")
    job = (data / "job.toml").read_text().replace("_party.toml", "_party512.toml")
    (data / "job512.toml").write_text(job.replace("[train]\n", "[train]\nkey_bits = 512\n"))
    # Execute
    done = vfl(
        "compare",
        "--config",
        "data/job512.toml",
        "--epochs",
        "2",
        "--encrypted",
        "--out",
        "enc",
        cwd=small_synthetic,
    )
    # Assert
    assert done.returncode == 0, done.stderr
    report = json.loads((small_synthetic / "enc" / "compare.json").read_text())
    secure = report["models"]["split_encrypted"]
    assert secure["key_bits"] == 512
    assert secure["auc"] > 0.55 and secure["loss_curve"][1] < secure["loss_curve"][0]
    # ciphertexts make the secure traffic much larger than the plaintext split's
    plain = report["models"]["split_plaintext"]
    assert secure["bytes_passive_to_active"] > 3 * plain["bytes_passive_to_active"]
    assert secure["cost_of_privacy"] > 1.0
