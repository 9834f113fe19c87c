"""E's long-running recommendation service, without its HTTP layer (:mod:`vfl.cli.http_api`).

It holds the :class:`~vfl.party.recommend.Recommender`, the ``z_B`` cache and the request
metrics. Requests never reach P; a refresh (at start, on a schedule, on ``POST /refresh``)
is one sealed encrypted session (:mod:`vfl.party.refresh`). A failed refresh leaves the old
cache in use and says so. With several partners there is one cache per partner and a
refresh runs one session with each; it replaces the caches only once every partner has
answered, so the model never mixes two refreshes.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from vfl.config.party import ServingSection
from vfl.config.plan import JobPlan
from vfl.data.loading import load_party_data
from vfl.data.tables import ActiveData
from vfl.errors import ConfigError, VflError
from vfl.party.export import Shard
from vfl.party.recommend import Recommender
from vfl.party.refresh import refresh_partners
from vfl.party.runner import PartyRun
from vfl.party.zb_cache import ZbCache, cache_dir, load_cache

BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RefreshFailed(VflError):
    """A refresh did not complete; the service goes on with the cache it had."""


class RefreshBusy(VflError):
    """A refresh is already running."""


class Metrics:
    """Request counts per (endpoint, status) and a latency histogram per endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one request and its latency."""
        with self._lock:
            key = (endpoint, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            counts = self.buckets.setdefault(endpoint, [0] * (len(BUCKETS_S) + 1))
            counts[bisect.bisect_left(BUCKETS_S, seconds)] += 1
            self.sums[endpoint] = self.sums.get(endpoint, 0.0) + seconds

    def lines(self) -> list[str]:
        """Prometheus text-format lines of the counters and histograms."""
        out = ["# TYPE vfl_requests_total counter"]
        with self._lock:
            for (endpoint, status), n in sorted(self.requests.items()):
                out.append(f'vfl_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            out.append("# TYPE vfl_request_seconds histogram")
            for endpoint, counts in sorted(self.buckets.items()):
                total = 0
                for bound, n in zip([*BUCKETS_S, float("inf")], counts, strict=True):
                    total += n
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    out.append(
                        f'vfl_request_seconds_bucket{{endpoint="{endpoint}",le="{le}"}} {total}'
                    )
                out.append(f'vfl_request_seconds_count{{endpoint="{endpoint}"}} {total}')
                out.append(
                    f'vfl_request_seconds_sum{{endpoint="{endpoint}"}} {self.sums[endpoint]:.6f}'
                )
        return out


class EService:
    """The state behind E's HTTP API; thread-safe (requests run in a thread pool)."""

    def __init__(
        self,
        run: PartyRun,
        shard: Shard | Sequence[Shard],
        serving: ServingSection,
        emit: Callable[[str], None],
    ) -> None:
        data = load_party_data(run.cfg)
        if not isinstance(data, ActiveData):
            raise ConfigError(
                str(run.config_file),
                "party.role",
                "E's service needs E's (active) config",
                "pass E_PARTY.toml; P runs `vfl serve` with its own config to answer refreshes",
            )
        self.shards = [shard] if isinstance(shard, Shard) else list(shard)
        self.run, self.shard, self.serving, self.emit = run, self.shards[0], serving, emit
        # one request is small tensor work: intra-op threads only contend with the other
        # requests' (4 ms per top-10 over 1,682 items on one thread, 20x slower on two)
        torch.set_num_threads(1)
        self.plan = JobPlan.from_json((self.shard.path / "plan.json").read_text(), "plan.json")
        self.model = Recommender(self.shards, run.cfg, data, self.plan)
        self.metrics = Metrics()
        found = [load_cache(s, n) for s, n in zip(self.shards, self.model.n_aligned, strict=True)]
        caches = [c for c in found if c is not None]
        self.caches: list[ZbCache] | None = caches if len(caches) == len(found) else None
        if self.caches is not None:
            self.model.use([c.z_b for c in self.caches])
        self.refreshes = {"ok": 0, "failed": 0}
        self.last_refresh_s: float | None = None
        self.last_error = ""
        self._refreshing = threading.Lock()
        self._stop = threading.Event()

    @property
    def cache(self) -> ZbCache | None:
        """The (first partner's) cache; None before the first refresh."""
        return None if self.caches is None else self.caches[0]

    def cache_age_s(self) -> float | None:
        """Seconds since the oldest cache's refresh (None: no cache yet)."""
        return None if self.caches is None else max(c.age_s() for c in self.caches)

    def refresh(self) -> dict[str, Any]:
        """One refresh now; the new cache replaces the old only once complete.

        Raises:
            RefreshBusy: another refresh is running.
            RefreshFailed: P unreachable, or the session failed (names why; the old cache stays).
        """
        if not self._refreshing.acquire(blocking=False):
            raise RefreshBusy("a refresh is already running; wait for it (see GET /healthz)")
        started = time.monotonic()
        try:
            tables = refresh_partners(
                self.run, self.shards, chunk=self.serving.users_per_refresh_step, emit=self.emit
            )
            now = time.time()
            caches = [
                ZbCache(z_b=z_b, refreshed_at=now, shard=s.digest)
                for s, z_b in zip(self.shards, tables, strict=True)
            ]
            for s, cache in zip(self.shards, caches, strict=True):
                cache.save(cache_dir(s), self.plan.fingerprint())
        except VflError as exc:
            self.refreshes["failed"] += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            age = self.cache_age_s()
            kept = "no cache yet" if age is None else f"cache of {age:.0f} s ago"
            raise RefreshFailed(
                f"refresh failed ({self.last_error}); still serving the {kept}"
            ) from exc
        finally:
            self._refreshing.release()
        self.caches = caches
        self.model.use(tables)
        self.refreshes["ok"] += 1
        seconds = time.monotonic() - started
        self.last_refresh_s = round(seconds, 3)
        users = sum(len(t) for t in tables)
        self.emit(f"refreshed z_B of {users} users in {seconds:.1f} s")
        return {"refreshed": True, "users": users, "seconds": round(seconds, 3)}

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except (RefreshBusy, RefreshFailed) as exc:
            self.emit(str(exc))

    def start_background(self) -> None:
        """The refresh at start (unless disabled) and the scheduled ones, in one thread."""

        def loop() -> None:
            if self.serving.refresh_at_start:
                self._refresh_quietly()
            every = self.serving.refresh_interval_s
            while every > 0 and not self._stop.wait(every):
                self._refresh_quietly()

        threading.Thread(target=loop, name="vfl-refresh", daemon=True).start()

    def stop(self) -> None:
        """No further scheduled refresh."""
        self._stop.set()

    def health(self) -> dict[str, Any]:
        """What ``GET /healthz`` answers (with several partners, also each one's users)."""
        age = self.cache_age_s()
        partners = {}
        if len(self.shards) > 1:
            rows = (
                [0] * len(self.shards) if self.caches is None else [len(c.z_b) for c in self.caches]
            )
            partners = {"partners": dict(zip(self.model.names, rows, strict=True))}
        return partners | {
            "status": "ok",
            "cache_age_s": None if age is None else round(age, 3),
            "cached_users": 0 if self.caches is None else sum(len(c.z_b) for c in self.caches),
            "items": len(self.model.item_ids),
            "refreshing": self._refreshing.locked(),
            "last_refresh_s": self.last_refresh_s,
            "refreshes": dict(self.refreshes),
            "last_refresh_error": self.last_error,
        }

    def metrics_text(self) -> str:
        """``GET /metrics`` in the Prometheus text format."""
        age = self.cache_age_s()
        lines = self.metrics.lines()
        lines += [
            "# TYPE vfl_cache_age_seconds gauge",
            f"vfl_cache_age_seconds {-1 if age is None else round(age, 3)}",
        ]
        lines += ["# TYPE vfl_refreshes_total counter"]
        lines += [f'vfl_refreshes_total{{result="{k}"}} {v}' for k, v in self.refreshes.items()]
        return "\n".join(lines) + "\n"
