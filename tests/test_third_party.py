"""The embedded data's optional third organisation (a logistics partner, ``parties/logistics``)
and E trained with both partners: every user group is scored, each partner is asked only
about positions of its own intersection with E, and the two-party files are unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.partner_helpers import run_partners, tiny_plan
from vfl.config.party import load_party_config
from vfl.data.loading import load_party_data
from vfl.data.synthetic_writer import generate_synthetic
from vfl.data.tables import ActiveData, PassiveData
from vfl.protocol.messages import SecureForwardIns


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("three")
    generate_synthetic(out, users=90, items=120, overlap=0.6, seed=5, third_party=0.5)
    return out


def _load(path: Path) -> ActiveData | PassiveData:
    return load_party_data(load_party_config(path))


def test_the_third_party_leaves_the_two_party_files_as_they_were(
    three: Path, tmp_path: Path
) -> None:
    # Execute: the same seed without the third party
    generate_synthetic(tmp_path, users=90, items=120, overlap=0.6, seed=5)
    # Assert: E's and P's files are byte for byte those of the two-party data
    for name in ("e_users.csv", "p_users.csv", "items.csv", "interactions.csv", "job.toml"):
        assert (three / name).read_bytes() == (tmp_path / name).read_bytes(), name
    assert not (tmp_path / "l_users.csv").exists()
    logistics = _load(three / "l_party.toml")
    assert isinstance(logistics, PassiveData)
    assert len(logistics.users) == 45  # half of the union


def test_e_with_two_partners_scores_every_group_and_asks_each_only_of_its_own(
    three: Path, tmp_path: Path
) -> None:
    # Prepare: E, P and L from the generated configs (the real loaders)
    active, payments, logistics = (_load(three / f"{p}_party.toml") for p in ("e", "p", "l"))
    assert isinstance(active, ActiveData)
    assert isinstance(payments, PassiveData) and isinstance(logistics, PassiveData)
    e_ids = set(active.users.ids.astype(str).tolist())
    known = {
        name: e_ids & set(d.users.ids.astype(str).tolist())
        for name, d in (("payments", payments), ("logistics", logistics))
    }
    # Execute: encrypted training (512-bit) with both partners, all of E's users in
    run = run_partners(
        active, {"payments": payments, "logistics": logistics}, tmp_path, plan=tiny_plan(epochs=2)
    )
    # Assert: the metrics name every group, and the groups partition E's test users
    m = run.metrics
    assert m["users"] == len(e_ids)
    assert {k: v["aligned_users"] for k, v in m["partners"].items()} == {
        k: len(v) for k, v in known.items()
    }
    groups = m["split_encrypted"]["groups"]
    assert set(groups) == {"known_to_all", "known_to_some", "e_only"}
    assert sum(g["test_users"] for g in groups.values()) == m["test_users"]
    # ... and each partner was asked only for positions inside its own intersection
    for name, ids in known.items():
        asked = np.concatenate([f.users for f in run.received[name].of_type(SecureForwardIns)])
        assert asked.size and asked.min() >= 0 and asked.max() < len(ids), name
