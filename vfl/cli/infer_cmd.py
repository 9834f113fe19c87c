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
    model: Path = typer.Option(..., help="E's exported shard (the run's DIR/model)."),
    user: str = typer.Option(None, help="Recommend the top-K items for this user id."),
    top_k: int = typer.Option(10, "--top-k", min=1, help="How many items to recommend."),
    include_seen: bool = typer.Option(False, help="Also rank items the user already has."),
    pairs: Path = typer.Option(None, help="CSV of (user_id, item_id) pairs to score."),
    out: Path = typer.Option(None, help="Write the JSON answer here (default: stdout)."),
) -> None:
    """Score pairs or recommend top-K items for a user, with P serving its shard (vfl serve)."""
    from vfl.config.party import load_party_config
    from vfl.party.export import load_shard
    from vfl.party.inference import InferenceRequest
    from vfl.party.runner import PartyRun
    from vfl.party.serving import active_session, run_session
    from vfl.storage import atomic_write_json

    if (user is None) == (pairs is None):
        raise DataError("command line", None, "give exactly one of --user or --pairs", "add one")
    cfg = load_party_config(config)
    shard = load_shard(model, "active")
    request = InferenceRequest(
        user=user, k=top_k, include_seen=include_seen, pairs=[] if pairs is None else _pairs(pairs)
    )
    run = PartyRun(cfg=cfg, config_file=config, out=model)
    timeout = cfg.network.timeout_s if cfg.network is not None else 60.0
    answer = run_session(run, active_session(run, shard, request, timeout), emit=console.print)
    if out is not None:
        atomic_write_json(out, answer)
        console.print(f"wrote {out}")
    else:
        print(json.dumps(answer, indent=2))


def serve(
    config: Path = typer.Option(..., help="P's party config (with a [network] section)."),
    model: Path = typer.Option(..., help="P's exported shard (the run's DIR/model)."),
) -> None:
    """Serve one inference session of E from P's shard; P contributes only ciphertexts."""
    from vfl.config.party import load_party_config
    from vfl.party.export import load_shard
    from vfl.party.runner import PartyRun
    from vfl.party.serving import passive_session, run_session

    cfg = load_party_config(config)
    shard = load_shard(model, "passive")
    run = PartyRun(cfg=cfg, config_file=config, out=model)
    timeout = cfg.network.timeout_s if cfg.network is not None else 60.0
    run_session(run, passive_session(run, shard, timeout), emit=console.print)
    console.print("done: served one inference session")
