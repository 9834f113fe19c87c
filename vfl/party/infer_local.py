"""``vfl infer``: batch scoring and top-K at E from the cached ``z_B`` (no message to P).

Without a cache (or with ``--refresh``) it first runs one refresh with P
(:mod:`vfl.party.refresh`), which writes the cache; later calls need no session at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from vfl.config.plan import JobPlan
from vfl.data.loading import load_party_data
from vfl.data.tables import ActiveData
from vfl.errors import ConfigError, DataError
from vfl.party.export import Shard
from vfl.party.recommend import NotFound, Recommender, Scored
from vfl.party.refresh import refresh as refresh_from_p
from vfl.party.runner import PartyRun
from vfl.party.zb_cache import ZbCache, cache_dir, load_cache

# (user or None, k, include_seen, pairs)
Request = tuple[str | None, int, bool, list[tuple[str, str]]]
REFRESH_CHUNK = 512


def cached_model(
    run: PartyRun, shard: Shard, *, refresh: bool, emit: Callable[[str], None]
) -> tuple[Recommender, ZbCache]:
    """E's recommender over the cache (refreshed from P first if absent or ``refresh``)."""
    data = load_party_data(run.cfg)
    if not isinstance(data, ActiveData):
        raise ConfigError(
            str(run.config_file), "party.role", "vfl infer needs E's (active) config", "pass E's"
        )
    plan = JobPlan.from_json((shard.path / "plan.json").read_text(), "plan.json")
    model = Recommender(shard, run.cfg, data, plan)
    cache = None if refresh else load_cache(shard, model.n_aligned)
    if cache is None:
        z_b = refresh_from_p(run, shard, chunk=REFRESH_CHUNK, emit=emit)
        cache = ZbCache(z_b=z_b, refreshed_at=time.time(), shard=shard.digest)
        cache.save(cache_dir(shard), plan.fingerprint())
    else:
        emit(f"scoring from the z_B cache of {cache.age_s():.0f} s ago (no message to P)")
    model.use(cache.z_b)
    return model, cache


def _rows(model: Recommender, scored: Scored) -> list[dict[str, Any]]:
    return [
        {"item": model.item_ids[int(i)], "score": round(float(s), 6)}
        for i, s in zip(scored.items.tolist(), scored.scores.tolist(), strict=True)
    ]


def answer_offline(
    run: PartyRun, shard: Shard, request: Request, *, refresh: bool, emit: Callable[[str], None]
) -> dict[str, Any]:
    """The JSON-ready answer of ``vfl infer``.

    Raises:
        DataError: an unknown user or item (named).
    """
    user, k, include_seen, pairs = request
    model, cache = cached_model(run, shard, refresh=refresh, emit=emit)
    try:
        if user is not None:
            scored = model.recommend(model.user(user), k, exclude_seen=not include_seen)
            return {
                "user": user,
                "path": scored.path.value,
                "top_k": _rows(model, scored),
                "cache_age_s": round(cache.age_s(), 3),
            }
        users = np.array([model.user(u) for u, _ in pairs], np.int64)
        items = np.array([model.item(i) for _, i in pairs], np.int64)
        scores, paths = model.score_pairs(users, items)
        out = [
            {"user": u, "item": i, "score": round(float(s), 6), "path": path.value}
            for (u, i), s, path in zip(pairs, scores.tolist(), paths, strict=True)
        ]
    except NotFound as exc:
        raise DataError("request", None, str(exc), "check the id against E's data") from exc
    return {"pairs": out, "cache_age_s": round(cache.age_s(), 3)}
