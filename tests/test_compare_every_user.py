"""The pilot's baselines on all of E's users, as its federated run trains them (issue 15/16).

E alone and the centralised model must see the users P does not know too (the federated
run trains and scores them through ``a_k``); otherwise the pilot compares models trained
and scored on different users.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vfl.config.job import load_job_config, load_job_parties
from vfl.data.loading import load_party_data
from vfl.data.synthetic_writer import generate_synthetic
from vfl.data.tables import ActiveData
from vfl.party.common import LocalAlignment
from vfl.party.partners import UserScope, UserUniverse
from vfl.training.compare import prepare, run_single, run_split
from vfl.training.loop import E_ONLY, KNOWN_TO_ALL
from vfl.training.summary import summarise


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("every")
    generate_synthetic(out, users=300, items=200, overlap=0.7)
    return out / "job.toml"


def test_every_user_holds_e_users_in_the_federated_order_and_p_only_for_known(job: Path) -> None:
    # Execute
    shared, every = prepare(job), prepare(job, every_user=True)
    # Check: all of E's users, in the order of E's universe (the federated run's positions)
    cfg = load_job_config(job)
    e_cfg, _ = load_job_parties(cfg, job)
    e_data = load_party_data(e_cfg)
    assert isinstance(e_data, ActiveData)
    everyone = LocalAlignment(ids=e_data.users.ids, rows=np.arange(len(e_data.users)))
    shared_local = LocalAlignment(ids=shared.alignment.ids, rows=shared.alignment.active_rows)
    universe = UserUniverse.of(everyone, [shared_local], UserScope.ALL)
    assert every.known is not None
    assert len(every.alignment) == len(e_data.users) > len(shared.alignment)
    assert every.alignment.ids.tolist() == universe.ids.astype(str).tolist()
    assert every.known.tolist() == (universe.positions[0] >= 0).tolist()
    assert int(every.known.sum()) == len(shared.alignment)
    # P's features: zero and flagged 0 where P does not know the user, P's own values elsewhere
    p = every.passive_users
    assert p.n_numeric == shared.passive_users.n_numeric + 1
    unknown = ~every.known
    assert float(p.numeric[unknown].abs().sum()) == 0.0
    assert int(p.categorical[unknown].abs().sum()) == 0
    assert p.numeric[every.known, -1].eq(1.0).all()
    by_id = {u: k for k, u in enumerate(shared.alignment.ids.tolist())}
    rows = [by_id[u] for u in every.alignment.ids[every.known].tolist()]
    assert np.array_equal(
        p.numeric[every.known, :-1].numpy(), shared.passive_users.numeric[rows].numpy()
    )


def test_baselines_on_every_user_report_the_e_only_group(job: Path) -> None:
    # Execute
    every = prepare(job, every_user=True)
    rows = summarise(run_single(every, "centralised", epochs=1))
    # Check: the test metrics per group, the E-only users among them
    groups = rows["groups"]
    assert set(groups) == {KNOWN_TO_ALL, E_ONLY}
    assert groups[E_ONLY]["test_users"] > 0
    assert groups[KNOWN_TO_ALL]["test_users"] + groups[E_ONLY]["test_users"] == len(
        every.split.test.users
    )


def test_the_in_process_split_refuses_users_p_does_not_know(job: Path) -> None:
    with pytest.raises(ValueError, match="every user known to P"):
        run_split(prepare(job, every_user=True), epochs=1)
