"""E and any set of its partners trained in one process: each partner serves from its own
thread over its own in-memory channel, with the real secret-shared layer.

Used where a run with a *subset* of the partners is needed next to the federated one: the
pilot's gain of each partner (``vfl pilot --parties 3``: the run with every partner minus the
run without that one) and ``benchmarks/partners.py``. The alignment with each partner is the
intersection of the ids (what their PSI yields), in id order as in the party processes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from vfl.config.plan import JobPlan
from vfl.data.tables import ActiveData, PassiveData
from vfl.party.active import train_active
from vfl.party.common import LocalAlignment
from vfl.party.partners import Partner, UserScope
from vfl.party.passive import serve_passive
from vfl.transport.channel import InMemoryChannel


def intersection_side(ids: np.ndarray, common: np.ndarray) -> LocalAlignment:
    """One side's alignment on the ids ``common`` (sorted): the rows of its table."""
    where = {str(u): r for r, u in enumerate(ids.tolist())}
    return LocalAlignment(ids=common, rows=np.array([where[str(u)] for u in common], np.int64))


def train_with_partners(
    active: ActiveData,
    passives: dict[str, PassiveData],
    plan: JobPlan,
    out: Path,
    *,
    local_seeds: dict[str, int] | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """E's metrics trained with every partner of ``passives`` (all of E's users in).

    ``local_seeds``: each party's secret seed by name (E's under ``"e"``); fresh when absent.
    Plaintext mode is allowed on every side, so ``plan.train.protocol`` decides the mode.

    Raises:
        BaseException: the first failure of a partner's thread.
    """
    seeds = local_seeds or {}
    links, threads, errors = [], [], []
    e_ids = active.users.ids.astype(str)
    for name, data in passives.items():
        common = np.intersect1d(e_ids, data.users.ids.astype(str))
        e_end, p_end = InMemoryChannel.pair("e", name)
        alignment = intersection_side(data.users.ids, common)

        def serve(
            d: PassiveData = data, ch: Any = p_end, a: LocalAlignment = alignment, n: str = name
        ) -> None:
            try:
                serve_passive(
                    d,
                    plan,
                    ch,
                    a,
                    timeout=timeout,
                    allow_plaintext=True,
                    party=n,
                    local_seed=seeds.get(n),
                )
            except BaseException as exc:  # reported by the caller's thread
                errors.append(exc)

        threads.append(threading.Thread(target=serve, daemon=True, name=name))
        links.append(
            Partner(name=name, channel=e_end, alignment=intersection_side(active.users.ids, common))
        )
    for t in threads:
        t.start()
    try:
        metrics = train_active(
            active,
            plan,
            links,
            out,
            scope=UserScope.ALL,
            timeout=timeout,
            allow_plaintext=True,
            local_seed=seeds.get("e"),
        )
    finally:
        for t in threads:
            t.join(timeout=60)
    if errors:
        raise errors[0]
    return metrics
