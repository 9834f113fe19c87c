"""Export and joint inference with three real processes: each party's shard names its partner,
``vfl infer`` (E) with ``vfl serve`` (P) ranks like the in-process model loaded from the same
two shards, and a shard alone or with the wrong partner is refused."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_processes import Pilot, _prepare
from vfl.config.party import load_party_config
from vfl.config.plan import JobPlan
from vfl.data.loading import load_party_data
from vfl.data.tables import ActiveData, PassiveData
from vfl.errors import ShardError
from vfl.models.bottom import PassiveBottom
from vfl.party.export import MANIFEST, load_pair, load_shard
from vfl.party.inference import candidate_items
from vfl.party.recommend import universe_head, user_universe
from vfl.training.inputs import TableTensors


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pilot]:
    """One finished three-process training run (512-bit keys, one epoch)."""
    run = _prepare(tmp_path_factory.mktemp("infer"), epochs=1)
    try:
        run.run_to_end()
        yield run
    finally:
        run.kill_all()


def _infer(run: Pilot, *args: str) -> dict[str, object]:
    """A fresh coordinator, ``vfl serve`` at P (long-running: stopped by SIGTERM here) and
    ``vfl infer`` at E (a refresh when E has no z_B cache yet, then local scoring)."""
    answer = run.root / "answer.json"
    run.start_coordinator()
    run.start("ps", "serve", "--config", str(run.files["p"]), "--model", str(run.root / "p/model"))
    e_model = str(run.root / "e" / "model")
    run.start(
        "es",
        "infer",
        "--config",
        str(run.files["e"]),
        "--model",
        e_model,
        "--out",
        str(answer),
        *args,
    )
    try:
        assert run.wait_exit("es", 120) == 0, run.log("es")
        run.procs["ps"].send_signal(signal.SIGTERM)
        assert run.wait_exit("ps", 60) == 128 + signal.SIGTERM, run.log("ps")
    finally:
        run.procs["coordinator"].send_signal(signal.SIGTERM)
        run.wait_exit("coordinator", 20)
    result: dict[str, object] = json.loads(answer.read_text())
    return result


def _in_process_scores(run: Pilot, user_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Candidate items and their probabilities from the two shards put together in this test
    only (``W_B = (U + V) / 2^w``): what no party can compute alone."""
    e, p = load_pair(run.root / "e" / "model", run.root / "p" / "model")
    plan = JobPlan.from_json((e.path / "plan.json").read_text(), "plan.json")
    e_data = load_party_data(load_party_config(run.files["e"]))
    p_data = load_party_data(load_party_config(run.files["p"]))
    assert isinstance(e_data, ActiveData) and isinstance(p_data, PassiveData)
    head = universe_head(e, e_data, plan)
    (u, w_bits), (v, _) = e.share(), p.share()
    w_b = torch.tensor(((u + v).astype(float) / 2.0**w_bits).astype(np.float32))
    p_rows = TableTensors.from_table(p_data.users, p.alignment().rows)
    m = plan.model
    bottom = PassiveBottom(p_rows.n_numeric, p_rows.cardinalities, m.passive_hidden, m.passive_out)
    bottom.load_state_dict(p.state_dict("bottom.pt"))
    bottom.eval()
    at = e.alignment().ids.tolist().index(user_id)  # P's aligned position
    pos = user_universe(e, e_data).ids.tolist().index(user_id)  # the head's user position
    items = candidate_items(e_data, user_id, include_seen=False)
    with torch.no_grad():
        idx = torch.tensor([at])
        z = bottom(p_rows.numeric[idx], p_rows.categorical[idx]) @ w_b
        rows = torch.full((len(items),), pos, dtype=torch.int64)
        logits = head.logits(rows, torch.as_tensor(items), z.expand(len(items), -1))
    return items, torch.sigmoid(logits).numpy()


def test_each_party_exports_a_shard_that_names_its_partner(trained: Pilot) -> None:
    # Execute
    e = load_shard(trained.root / "e" / "model", "active")
    p = load_shard(trained.root / "p" / "model", "passive")
    # Assert: same job and plan, each names the other's digest, and only E has the head
    assert e.manifest["job"] == p.manifest["job"] == "proc-test"
    assert e.manifest["plan_fingerprint"] == p.manifest["plan_fingerprint"]
    assert e.partner == p.digest and p.partner == e.digest and e.digest != p.digest
    assert {"head.pt", "share.json"} <= set(e.manifest["files"]) and "bottom.pt" not in e.manifest[
        "files"
    ]
    assert "bottom.pt" in p.manifest["files"] and "head.pt" not in p.manifest["files"]
    assert not list((trained.root / "p" / "model").glob("*.key"))  # no Paillier key on disk


def test_e_metrics_hold_time_and_bytes_of_every_phase(trained: Pilot) -> None:
    # Execute
    metrics = json.loads((trained.root / "e" / "metrics.json").read_text())
    phases = {r["phase"]: r for r in metrics["phases"]}
    # Assert
    assert list(phases) == [
        "handshake",
        "psi",
        "alignment",
        "setup",
        "epoch 1",
        "evaluation 1",
        "export",
    ]
    for name in ("handshake", "psi", "setup", "epoch 1", "evaluation 1", "export"):
        assert phases[name]["bytes_sent"] > 0 and phases[name]["bytes_received"] > 0, name
    assert phases["epoch 1"]["bytes_received"] > phases["handshake"]["bytes_received"]
    assert metrics["psi"]["intersection"] == metrics["aligned_users"]
    assert metrics["psi"]["bytes_sent"] == phases["psi"]["bytes_sent"]


def test_infer_top_k_equals_the_in_process_ranking_of_the_same_shards(trained: Pilot) -> None:
    # Prepare: a test user of the aligned intersection
    user = str(load_shard(trained.root / "e" / "model", "active").alignment().ids[3])
    items, probs = _in_process_scores(trained, user)
    e_data = load_party_data(load_party_config(trained.files["e"]))
    order = np.lexsort((items, -probs))[:10]
    want = [str(e_data.items.ids[i]) for i in items[order]]
    # Execute: three processes, encrypted forward, scores only at E
    answer = _infer(trained, "--user", user.upper(), "--top-k", "10")
    # Assert
    got = answer["top_k"]
    assert isinstance(got, list)
    assert [row["item"] for row in got] == want
    np.testing.assert_allclose([row["score"] for row in got], probs[order], atol=1e-4)
    assert "score" not in trained.log("ps") and user not in trained.log("ps")


def test_infer_scores_pairs_like_the_in_process_model(trained: Pilot) -> None:
    # Prepare
    user = str(load_shard(trained.root / "e" / "model", "active").alignment().ids[5])
    items, probs = _in_process_scores(trained, user)
    e_data = load_party_data(load_party_config(trained.files["e"]))
    chosen = [0, 7, 19]
    csv = trained.root / "pairs.csv"
    csv.write_text(
        "user_id,item_id\n" + "".join(f"{user},{e_data.items.ids[items[j]]}\n" for j in chosen)
    )
    # Execute
    answer = _infer(trained, "--pairs", str(csv))
    # Assert
    got = answer["pairs"]
    assert isinstance(got, list)
    np.testing.assert_allclose([r["score"] for r in got], probs[chosen], atol=1e-4)


def test_a_shard_alone_or_with_another_partner_is_refused(trained: Pilot, tmp_path: Path) -> None:
    e_dir, p_dir = trained.root / "e" / "model", trained.root / "p" / "model"
    # alone
    with pytest.raises(ShardError, match="partner shard") as alone:
        load_pair(e_dir, None)
    assert str(e_dir / MANIFEST) in str(alone.value) and "vfl serve" in str(alone.value)
    # changed after export
    changed = tmp_path / "changed"
    shutil.copytree(p_dir, changed)
    share = changed / "share.json"
    share.write_text(share.read_text().replace('"values": ["', '"values": ["1', 1))
    with pytest.raises(ShardError, match=r"share\.json"):
        load_shard(changed, "passive")
    # a consistent shard, but not the partner E's shard was exported with
    other = tmp_path / "other"
    shutil.copytree(changed, other)
    manifest = json.loads((other / MANIFEST).read_text())

    manifest["files"]["share.json"] = hashlib.sha256(
        (other / "share.json").read_bytes()
    ).hexdigest()
    manifest["shard_sha256"] = hashlib.sha256(
        json.dumps(manifest["files"], sort_keys=True).encode()
    ).hexdigest()
    (other / MANIFEST).write_text(json.dumps(manifest))
    load_shard(other, "passive")  # valid on its own
    with pytest.raises(ShardError, match="not the partner"):
        load_pair(e_dir, other)
    # the wrong role
    with pytest.raises(ShardError, match="expected a passive shard"):
        load_shard(e_dir, "passive")
