"""Both parties' processes-to-be, run as threads over the in-memory channel: real files, PSI,
encrypted training and evaluation, each side seeing only its own data."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from tests.helpers import accept_test_keys
from vfl.config.job import load_job_config, load_job_parties
from vfl.config.plan import JobPlan
from vfl.data.synthetic_writer import generate_synthetic
from vfl.party.active import run_active
from vfl.party.partners import PartnerLink
from vfl.party.passive import run_passive
from vfl.transport.channel import InMemoryChannel


def test_psi_then_encrypted_training_end_to_end(tmp_path: Path) -> None:
    # Prepare: small synthetic data, 512-bit test keys
    data = tmp_path / "data"
    generate_synthetic(data, users=500, items=150, overlap=0.7, seed=4)
    job_file = data / "job.toml"
    job_file.write_text(job_file.read_text().replace("[train]\n", "[train]\nkey_bits = 512\n"))
    accept_test_keys(data / "e_party.toml", data / "p_party.toml")
    job_cfg = load_job_config(job_file)
    e_cfg, p_cfg = load_job_parties(job_cfg, job_file)
    job = JobPlan.of(job_cfg)
    e_ch, p_ch = InMemoryChannel.pair("shop", "payments")
    out: dict[str, object] = {}
    errors: list[BaseException] = []

    def passive() -> None:
        try:
            out["p"] = run_passive(p_cfg, job, p_ch, tmp_path / "p", timeout=30)
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    thread = threading.Thread(target=passive, daemon=True)
    thread.start()
    # Execute
    links = [PartnerLink(e_ch, tmp_path / "e")]
    metrics = run_active(e_cfg, job, links, tmp_path / "e", epochs=3, timeout=30)
    thread.join(timeout=60)
    # Assert
    assert not errors and not thread.is_alive()
    e_align = json.loads((tmp_path / "e" / "alignment.json").read_text())
    p_align = json.loads((tmp_path / "p" / "alignment.json").read_text())
    assert e_align["ids"] == p_align["ids"]  # same users in the same order on both sides
    assert metrics["aligned_users"] == len(e_align["ids"]) == out["p"]["aligned_users"]
    row = metrics["split_encrypted"]
    assert row["auc"] > 0.55 and len(row["loss_curve"]) == 3
    assert out["p"]["steps"] > 0
    assert (tmp_path / "e" / "metrics.json").exists()
    assert not (tmp_path / "p" / "metrics.json").exists()  # P never sees metrics
