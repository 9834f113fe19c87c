"""``vfl party``: run one organisation's party process against the coordinator."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:  # torch loads only when the command runs
    from vfl.training.loop import EpochRecord

console = Console(stderr=True, width=120)


def _progress(name: str, r: EpochRecord) -> None:
    from vfl.training.loop import progress_line

    console.print(progress_line(name, r), markup=False)


def party(
    config: Path = typer.Option(..., help="This party's config (with a [network] section)."),
    job: Path = typer.Option(
        None, help="Optional local job file; must match the plan the coordinator hands out."
    ),
    out: Path = typer.Option(Path("runs/party"), help="This party's work directory."),
    epochs: int = typer.Option(None, min=1, help="Override the plan's train.epochs (E only)."),
    local_seed: int = typer.Option(
        None,
        min=0,
        help="This party's secret seed for its own initial weights (default: fresh from the "
        "OS). For reproducible runs only; never share it.",
    ),
) -> None:
    """Join the coordinator's job, handshake with the peer, align by PSI, train encrypted."""
    from vfl.cli.signals import stop_on_signals
    from vfl.config.party import load_party_config
    from vfl.errors import Interrupted
    from vfl.party.runner import PartyRun, run_party

    cfg = load_party_config(config)
    run = PartyRun(
        cfg=cfg, config_file=config, out=out, job_file=job, epochs=epochs, local_seed=local_seed
    )
    try:
        with stop_on_signals(f"party '{cfg.party.name}'"):
            result = run_party(run, emit=console.print, progress=_progress)
    except Interrupted as stop:
        raise stop.again(
            f"{stop}; its checkpoints in {out / 'checkpoints'} are kept. Fix: re-run the same "
            "command to resume (the other party waits for it, or re-run its command too)"
        ) from None
    row = result.get("split_encrypted")
    if isinstance(row, dict):
        console.print(
            f"done: test AUC {row['auc']:.4f}, HR@10 {row['hr@10']:.4f} at the selected "
            f"epoch {row['best_epoch']} of {row['epochs_trained']} ({row['stopped']}); "
            f"wrote {out / 'metrics.json'}"
        )
    else:
        console.print(
            f"done: {result['aligned_users']} aligned users, {result['steps']} steps served"
        )
