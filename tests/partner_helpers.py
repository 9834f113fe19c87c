"""E with several passive parties in one process: each partner serves from its own thread over
its own recorded in-memory channel, with the real secret-shared layer (512-bit keys)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.secure_helpers import TEST_FLOOR
from vfl.config.job import EvalConfig, ModelConfig, TrainConfig
from vfl.config.plan import JobPlan
from vfl.data.tables import ActiveData, FeatureTable, PassiveData
from vfl.party.active import train_active
from vfl.party.common import LocalAlignment
from vfl.party.partners import Partner, UserScope
from vfl.party.passive import serve_passive
from vfl.protocol.options import Mode
from vfl.protocol.recorder import RecordingChannel
from vfl.transport.channel import InMemoryChannel

E_SEED = 11  # E's own secret seed in these runs
P_SEEDS = (22, 33, 44)  # each passive party's own


def tiny_plan(mode: Mode = Mode.ENCRYPTED, *, epochs: int = 3) -> JobPlan:
    """A job plan small enough for 512-bit runs of a few seconds (no early stopping)."""
    return JobPlan(
        model=ModelConfig(
            embedding_dim=4,
            passive_hidden=(6,),
            passive_out=3,
            active_hidden=(6,),
            interactive_out=4,
            top_hidden=(4,),
        ),
        train=TrainConfig(
            epochs=epochs,
            patience=None,
            users_per_step=4,
            key_bits=512,
            protocol=mode,
            precompute_randomness=False,
            learning_rate=0.01,
        ),
        eval=EvalConfig(k=5, test_negatives=20),
    )


def side_of(table: FeatureTable, common: np.ndarray) -> LocalAlignment:
    """One side of a PSI on ``common`` ids: the ids and this party's rows of them."""
    where = {str(u): r for r, u in enumerate(table.ids.tolist())}
    return LocalAlignment(
        ids=np.asarray(common), rows=np.array([where[str(u)] for u in common], np.int64)
    )


def common_ids(active: ActiveData, passive: PassiveData) -> np.ndarray:
    """The ids both hold (what their PSI would output), sorted."""
    return np.intersect1d(active.users.ids.astype(str), passive.users.ids.astype(str))


@dataclass
class PartnersRun:
    """A finished run: E's metrics and, per partner, every message it received."""

    metrics: dict[str, Any]
    received: dict[str, RecordingChannel] = field(default_factory=dict)
    served: dict[str, dict[str, int]] = field(default_factory=dict)


def run_partners(
    active: ActiveData,
    passives: dict[str, PassiveData],
    out: Path,
    *,
    plan: JobPlan | None = None,
    scope: UserScope = UserScope.ALL,
) -> PartnersRun:
    """Train E with every passive party of ``passives`` (name -> data), each aligned on
    the ids it shares with E, and record what each partner receives."""
    plan = plan or tiny_plan()
    run = PartnersRun(metrics={})
    links, threads, errors = [], [], []
    for k, (name, data) in enumerate(passives.items()):
        common = common_ids(active, data)
        e_end, p_end = InMemoryChannel.pair("shop", name)
        recorded = RecordingChannel(p_end)
        run.received[name] = recorded

        def serve(d: PassiveData = data, ch: RecordingChannel = recorded, c=common, n=name, s=k):  # type: ignore[no-untyped-def]
            try:
                run.served[n] = serve_passive(
                    d,
                    plan,
                    ch,
                    side_of(d.users, c),
                    timeout=60,
                    local_seed=P_SEEDS[s],
                    floor=TEST_FLOOR,
                    allow_plaintext=True,
                    party=n,
                )
            except BaseException as exc:  # re-raised below
                errors.append(exc)

        threads.append(threading.Thread(target=serve, daemon=True, name=name))
        links.append(Partner(name=name, channel=e_end, alignment=side_of(active.users, common)))
    for t in threads:
        t.start()
    run.metrics = train_active(
        active,
        plan,
        links,
        out,
        scope=scope,
        timeout=60,
        local_seed=E_SEED,
        floor=TEST_FLOOR,
        allow_plaintext=True,
    )
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads)
    return run
