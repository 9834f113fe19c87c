"""E's HTTPS API over :class:`~vfl.party.service.EService` (FastAPI + uvicorn; imported only by
``vfl serve`` with E's config, so ``vfl --help`` and ``vfl coordinator`` stay light).

* ``GET /recommend?user=ID&k=10&exclude_seen=true``: the top ``k`` items and their path.
* ``POST /score`` ``{"pairs": [{"user": ID, "item": ID}, ...]}``: one score per pair.
* ``GET /healthz``: liveness and the cache age (no token needed; it names no user).
* ``GET /metrics``: Prometheus text (requests, latency histogram, cache age, refreshes).
* ``POST /refresh``: refresh ``z_B`` from P now (409 while one runs, 503 if P is down).

Every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>`` (``[serving]
token_file``). Unknown ids answer 404, malformed requests 422, a failed refresh 503. With
several partners an answer also names the partners whose ``z_B`` entered it (``partners``).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from vfl.party.recommend import NotFound, Scored
from vfl.party.service import EService, RefreshBusy, RefreshFailed

MAX_PAIRS = 10_000


class Pair(BaseModel):
    """One (user, item) pair to score."""

    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1)
    item: str = Field(min_length=1)


class ScoreRequest(BaseModel):
    """``POST /score``'s body."""

    model_config = ConfigDict(extra="forbid")
    pairs: list[Pair] = Field(min_length=1, max_length=MAX_PAIRS)


def _items(service: EService, scored: Scored) -> list[dict[str, Any]]:
    ids = service.model.item_ids
    return [
        {"item": ids[int(i)], "score": round(float(s), 6)}
        for i, s in zip(scored.items.tolist(), scored.scores.tolist(), strict=True)
    ]


def _partners(service: EService, pos: int) -> dict[str, Any]:
    """With several partners, which of them contributed to an answer (nothing otherwise)."""
    if len(service.shards) < 2:
        return {}
    return {"partners": service.model.partners_of(pos)}


def build_app(service: EService, token: str) -> FastAPI:
    """The FastAPI app; ``token`` is the bearer token callers must send."""
    app = FastAPI(title="vfl recommendation service", docs_url=None, redoc_url=None)

    def authorised(authorization: str = Header("")) -> None:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer ...)")

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        service.metrics.observe(
            request.url.path, response.status_code, time.perf_counter() - started
        )
        return response

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return service.health()

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(authorised)])
    def metrics() -> str:
        return service.metrics_text()

    @app.get("/recommend", dependencies=[Depends(authorised)])
    def recommend(
        user: str = Query(..., min_length=1),
        k: int = Query(10, ge=1, le=10_000),
        exclude_seen: bool = True,
    ) -> dict[str, Any]:
        pos = service.model.user(user)
        scored = service.model.recommend(pos, k, exclude_seen=exclude_seen)
        return {
            "user": user,
            "path": scored.path.value,
            "top_k": _items(service, scored),
            **_partners(service, pos),
            "cache_age_s": service.cache_age_s(),
        }

    @app.post("/score", dependencies=[Depends(authorised)])
    def score(body: ScoreRequest) -> dict[str, Any]:
        model = service.model
        users = np.array([model.user(p.user) for p in body.pairs], np.int64)
        items = np.array([model.item(p.item) for p in body.pairs], np.int64)
        scores, paths = model.score_pairs(users, items)
        out = [
            {"user": p.user, "item": p.item, "score": round(float(s), 6), "path": path.value}
            | _partners(service, int(u))
            for p, s, path, u in zip(body.pairs, scores.tolist(), paths, users, strict=True)
        ]
        return {"pairs": out, "cache_age_s": service.cache_age_s()}

    @app.post("/refresh", dependencies=[Depends(authorised)])
    def refresh() -> dict[str, Any]:
        try:
            return service.refresh()
        except RefreshBusy as exc:
            raise HTTPException(409, str(exc)) from exc
        except RefreshFailed as exc:
            raise HTTPException(503, str(exc)) from exc

    return app


def run_api(service: EService, token: str, *, emit: Callable[[str], None]) -> None:
    """Serve the API over TLS on ``[serving] listen`` until SIGINT/SIGTERM."""
    cfg = service.serving
    host, _, port = cfg.listen.rpartition(":")
    host = host.strip("[]")
    config = uvicorn.Config(
        build_app(service, token),
        host=host,
        port=int(port),
        ssl_certfile=str(cfg.tls_cert),
        ssl_keyfile=str(cfg.tls_key),
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    emit(f"serving recommendations on https://{cfg.listen}")
    server.run()
