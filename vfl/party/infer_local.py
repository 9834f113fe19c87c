"""``vfl infer``: batch scoring and top-K at E from the cached ``z_B`` (no message to P).

Without a cache (or with ``--refresh``) it first runs one refresh with P
(:mod:`vfl.party.refresh`), which writes the cache; later calls need no session at all. With
several partners there is one cache per partner, next to E's shard for it, and a missing
one refreshes them all (each partner asked only about its own aligned users).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vfl.config.plan import JobPlan
from vfl.data.loading import load_party_data
from vfl.data.tables import ActiveData
from vfl.errors import ConfigError, DataError
from vfl.party.export import Shard
from vfl.party.recommend import NotFound, Recommender, Scored
from vfl.party.refresh import refresh_partners
from vfl.party.runner import PartyRun
from vfl.party.zb_cache import ZbCache, cache_dir, load_cache

# (user or None, k, include_seen, pairs)
Request = tuple[str | None, int, bool, list[tuple[str, str]]]
REFRESH_CHUNK = 512


def cached_model(
    run: PartyRun, shards: Sequence[Shard], *, refresh: bool, emit: Callable[[str], None]
) -> tuple[Recommender, list[ZbCache]]:
    """E's recommender over the caches, one per partner (all refreshed first if one is
    absent, or with ``refresh``)."""
    data = load_party_data(run.cfg)
    if not isinstance(data, ActiveData):
        raise ConfigError(
            str(run.config_file), "party.role", "vfl infer needs E's (active) config", "pass E's"
        )
    shard = shards[0]
    plan = JobPlan.from_json((shard.path / "plan.json").read_text(), "plan.json")
    model = Recommender(shards, run.cfg, data, plan)
    found = [
        None if refresh else load_cache(s, n) for s, n in zip(shards, model.n_aligned, strict=True)
    ]
    caches = [c for c in found if c is not None]
    if len(caches) < len(shards):
        tables = refresh_partners(run, shards, chunk=REFRESH_CHUNK, emit=emit)
        now = time.time()
        caches = [
            ZbCache(z_b=z_b, refreshed_at=now, shard=s.digest)
            for s, z_b in zip(shards, tables, strict=True)
        ]
        for s, cache in zip(shards, caches, strict=True):
            cache.save(cache_dir(s), plan.fingerprint())
    else:
        age = max(c.age_s() for c in caches)
        whom = "any partner" if len(shards) > 1 else "P"
        emit(f"scoring from the z_B cache of {age:.0f} s ago (no message to {whom})")
    model.use([c.z_b for c in caches])
    return model, caches


def _rows(model: Recommender, scored: Scored) -> list[dict[str, Any]]:
    return [
        {"item": model.item_ids[int(i)], "score": round(float(s), 6)}
        for i, s in zip(scored.items.tolist(), scored.scores.tolist(), strict=True)
    ]


def answer_offline(
    run: PartyRun,
    shard: Shard | Sequence[Shard],
    request: Request,
    *,
    refresh: bool,
    emit: Callable[[str], None],
) -> dict[str, Any]:
    """The JSON-ready answer of ``vfl infer``.

    Raises:
        DataError: an unknown user or item (named).
    """
    user, k, include_seen, pairs = request
    model, caches = cached_model(run, _listed(shard), refresh=refresh, emit=emit)
    age = round(max(c.age_s() for c in caches), 3)
    several = len(caches) > 1
    try:
        if user is not None:
            pos = model.user(user)
            scored = model.recommend(pos, k, exclude_seen=not include_seen)
            answer = {"user": user, "path": scored.path.value, "top_k": _rows(model, scored)}
            return answer | _partners(model, [pos], several) | {"cache_age_s": age}
        users = np.array([model.user(u) for u, _ in pairs], np.int64)
        items = np.array([model.item(i) for _, i in pairs], np.int64)
        scores, paths = model.score_pairs(users, items)
        out = [
            {"user": u, "item": i, "score": round(float(s), 6), "path": path.value}
            | _partners(model, [int(pos)], several)
            for (u, i), s, path, pos in zip(pairs, scores.tolist(), paths, users, strict=True)
        ]
    except NotFound as exc:
        raise DataError("request", None, str(exc), "check the id against E's data") from exc
    return {"pairs": out, "cache_age_s": age}


def _listed(shard: Shard | Sequence[Shard]) -> list[Shard]:
    return [shard] if isinstance(shard, Shard) else list(shard)


def _partners(model: Recommender, pos: list[int], several: bool) -> dict[str, Any]:
    """With several partners, which of them contributed to the answer (nothing otherwise)."""
    return {"partners": model.partners_of(pos[0])} if several else {}
