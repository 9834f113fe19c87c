"""``vfl infer`` (E) and ``vfl serve`` (P): joint inference from the exported shards, online
through the coordinator, sealed and encrypted as in training; only E sees the scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import typer
from rich.console import Console

from vfl.errors import DataError

console = Console(stderr=True, width=120)


def _pairs(path: Path) -> list[tuple[str, str]]:
    """(user, item) rows of a CSV with columns ``user_id`` and ``item_id``."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DataError(str(path), None, f"cannot read: {exc.strerror}", "check the path") from exc
    for col in ("user_id", "item_id"):
        if rows and col not in rows[0]:
            raise DataError(
                str(path), col, f"missing; columns present: {sorted(rows[0])}", "name it " + col
            )
    return [(r["user_id"], r["item_id"]) for r in rows]


def infer(
    config: Path = typer.Option(..., help="E's party config (with a [network] section)."),
    model: Path = typer.Option(
        ...,
        help="E's exported shard (the run's DIR/model); with [[network.partners]], E's work "
        "directory DIR (its shards in DIR/partners/<name>/model).",
    ),
    user: str = typer.Option(None, help="Recommend the top-K items for this user id."),
    top_k: int = typer.Option(10, "--top-k", min=1, help="How many items to recommend."),
    include_seen: bool = typer.Option(False, help="Also rank items the user already has."),
    pairs: Path = typer.Option(None, help="CSV of (user_id, item_id) pairs to score."),
    out: Path = typer.Option(None, help="Write the JSON answer here (default: stdout)."),
    refresh: bool = typer.Option(False, help="Refresh the z_B cache from P even if one exists."),
) -> None:
    """Score pairs or recommend top-K items for a user, from the cached z_B (refreshed from P,
    which runs `vfl serve`, when there is no cache yet or with --refresh)."""
    from vfl.config.party import load_party_config
    from vfl.party.e_shards import load_active_shards
    from vfl.party.infer_local import answer_offline
    from vfl.party.runner import PartyRun
    from vfl.storage import atomic_write_json

    if (user is None) == (pairs is None):
        raise DataError("command line", None, "give exactly one of --user or --pairs", "add one")
    cfg = load_party_config(config)
    shards = load_active_shards(model, cfg)
    run = PartyRun(cfg=cfg, config_file=config, out=model)
    request = (user, top_k, include_seen, [] if pairs is None else _pairs(pairs))
    answer = answer_offline(run, shards, request, refresh=refresh, emit=console.print)
    if out is not None:
        atomic_write_json(out, answer)
        console.print(f"wrote {out}")
    else:
        print(json.dumps(answer, indent=2))


def serve(
    config: Path = typer.Option(..., help="E's or P's party config (with a [network] section)."),
    model: Path = typer.Option(
        ...,
        help="This party's exported shard (the run's DIR/model); at E with "
        "[[network.partners]], E's work directory DIR (its shards in DIR/partners/<name>/model).",
    ),
) -> None:
    """Long-running: at E the HTTPS recommendation API ([serving] section), at P the answers
    to E's z_B refreshes (P contributes only ciphertexts and never sees a request)."""
    from vfl.cli.signals import stop_on_signals
    from vfl.config.party import Role, load_party_config
    from vfl.errors import ConfigError, Interrupted
    from vfl.party.export import load_shard
    from vfl.party.runner import PartyRun

    cfg = load_party_config(config)
    run = PartyRun(cfg=cfg, config_file=config, out=model)
    if cfg.role is Role.PASSIVE:
        import threading

        from vfl.party.refresh import serve_refreshes

        shard = load_shard(model, "passive")
        stop = threading.Event()
        console.print(f"{cfg.party.name}: answering z_B refreshes until stopped")
        try:
            with stop_on_signals("vfl serve"):
                served = serve_refreshes(run, shard, emit=console.print, stop=stop)
        except Interrupted:
            stop.set()
            raise
        console.print(f"done: served {served} refreshes")
        return
    if cfg.serving is None:
        raise ConfigError(
            str(config),
            "serving",
            "missing: E's service needs its listen address, TLS files and client token",
            "add [serving] with listen, tls_cert, tls_key and token_file (docs/inference.md)",
        )
    from vfl.cli.http_api import run_api
    from vfl.party.e_shards import load_active_shards
    from vfl.party.service import EService

    shards = load_active_shards(model, cfg)
    token = _token(cfg.serving.token_file)
    service = EService(run, shards, cfg.serving, console.print)
    service.start_background()
    try:
        run_api(service, token, emit=console.print)
    finally:
        service.stop()


def _token(path: Path) -> str:
    """The callers' bearer token: the file's one line.

    Raises:
        ConfigError: the file is empty or too short to be a secret.
    """
    from vfl.errors import ConfigError

    token = path.read_text(encoding="utf-8").strip()
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ConfigError(
            str(path),
            "serving.token_file",
            "the token must be one line of at least 16 characters without spaces",
            "write one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE`",
        )
    return token
