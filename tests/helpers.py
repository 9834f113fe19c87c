"""Small in-memory party data for unit tests (no files, no generator)."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from vfl.data.formats import dumps_toml
from vfl.data.tables import ActiveData, FeatureTable, InteractionLog, PassiveData

TEST_KEY_BITS = 512  # unit and process tests; real party configs keep the 2048-bit floor


def accept_test_keys(*party_configs: Path, bits: int = TEST_KEY_BITS) -> None:
    """Lower each party config's own security floor (``[party] min_key_bits``) to ``bits``,
    as a test that runs the real parties with small Paillier keys must."""
    for path in party_configs:
        table = tomllib.loads(path.read_text())
        table["party"]["min_key_bits"] = bits
        path.write_text(dumps_toml(table))


def table(
    ids: list[str], rng: np.random.Generator, n_num: int, cards: tuple[int, ...]
) -> FeatureTable:
    """Random standardised numeric and categorical features for ``ids``."""
    n = len(ids)
    return FeatureTable(
        ids=np.array(ids),
        numeric=rng.standard_normal((n, n_num)).astype(np.float32),
        numeric_names=tuple(f"x{j}" for j in range(n_num)),
        categorical=np.stack([rng.integers(0, c, n) for c in cards], axis=1).astype(np.int64)
        if cards
        else np.zeros((n, 0), np.int64),
        categorical_names=tuple(f"c{j}" for j in range(len(cards))),
        cardinalities=cards,
    )


def tiny_parties(
    seed: int = 0,
    n_users: int = 40,
    n_items: int = 150,
    positives: tuple[int, int] = (6, 11),
) -> tuple[ActiveData, PassiveData]:
    """E with 40 users (30 shared with P), 150 items and 6-10 positives per user."""
    rng = np.random.default_rng(seed)
    e_ids = [f"u{i:03d}" for i in range(n_users)]
    p_ids = [f"u{i:03d}" for i in range(10, n_users + 10)]
    users, items, times = [], [], []
    for u in e_ids:
        k = int(rng.integers(*positives))
        users += [u] * k
        items += [f"i{j:03d}" for j in rng.choice(n_items, k, replace=False)]
        times += sorted(rng.uniform(0, 1e6, k).tolist())
    log = InteractionLog(
        user_ids=np.array(users),
        item_ids=np.array(items),
        timestamps=np.array(times),
        labels=np.ones(len(users), np.int8),
    )
    active = ActiveData(
        users=table(e_ids, rng, 3, (4,)),
        items=table([f"i{j:03d}" for j in range(n_items)], rng, 2, (5,)),
        interactions=log,
    )
    return active, PassiveData(users=table(p_ids, rng, 4, (3, 6)))


def tiny_training_inputs(parties=None):  # type: ignore[no-untyped-def]
    """Aligned tiny parties ready to train: (alignment, split, E inputs, P tensors, channels).

    ``parties`` is an ``(ActiveData, PassiveData)`` pair; :func:`tiny_parties` by default.

    The two in-memory channel endpoints record every payload they send (``.sent``).
    """
    from vfl.data.alignment import align_locally
    from vfl.data.splits import build_split
    from vfl.training.inputs import TableTensors
    from vfl.training.recommenders import ActiveInputs
    from vfl.transport.channel import InMemoryChannel

    active, passive = parties or tiny_parties()
    al = align_locally(active.users.ids, passive.users.ids)
    split = build_split(active.interactions, al, active.items, n_negatives=20, seed=0)
    inputs = ActiveInputs(
        users=TableTensors.from_table(active.users, al.active_rows),
        items=TableTensors.from_table(active.items),
        sequences=(split.train_users, split.train_items),
    )
    p = TableTensors.from_table(passive.users, al.passive_rows)
    e_ch, p_ch = InMemoryChannel.pair("E", "P")
    e_ch.sent, p_ch.sent = [], []
    return al, split, inputs, p, e_ch, p_ch


def run_concurrently(
    target: Callable[..., None], jobs: Iterable[tuple[Any, ...]], *, timeout: float = 60
) -> None:
    """Run ``target(*job)`` for every job at once, one thread each, as the two parties'
    processes would; fail if any is still running after ``timeout`` seconds."""
    threads = [threading.Thread(target=target, args=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
        assert not t.is_alive(), f"{target.__name__} still running after {timeout} s"
