"""``vfl compare``: E alone vs plaintext split vs centralised, on one split, in one process."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # torch and pandas load only when the command runs (vfl --help stays fast)
    from vfl.training.loop import EpochRecord

console = Console(stderr=True, width=120)


class Dataset(StrEnum):
    """Datasets ``compare`` can prepare by itself."""

    SYNTHETIC = "synthetic"
    MOVIELENS = "movielens"


def _prepare_data(dataset: Dataset, data_dir: Path) -> Path:
    """Write the dataset's party files and job.toml into ``data_dir`` unless already there."""
    job = data_dir / "job.toml"
    if job.exists():
        console.print(f"using existing data in {data_dir}")
        return job
    console.print(f"preparing {dataset.value} data in {data_dir} ...")
    if dataset is Dataset.SYNTHETIC:
        from vfl.data.synthetic_writer import generate_synthetic

        generate_synthetic(data_dir)
    else:
        from vfl.data.movielens import convert_movielens

        convert_movielens(data_dir)
    return job


def _progress(name: str, r: EpochRecord) -> None:
    from vfl.training.loop import progress_line

    console.print(progress_line(name, r), markup=False)


def _print_noise(noise: dict[str, Any], k: int) -> None:
    table = Table(title=f"mean ± sd over seeds {next(iter(noise.values()))['seeds']}")
    for col in ("model", f"HR@{k}", f"NDCG@{k}", "AUC", "best epochs"):
        table.add_column(col, justify="right")
    for name, n in noise.items():
        cells = [f"{n[m]['mean']:.4f} ± {n[m]['sd']:.4f}" for m in (f"hr@{k}", f"ndcg@{k}", "auc")]
        table.add_row(name, *cells, " ".join(str(e) for e in n["best_epochs"]))
    Console(width=120).print(table)


def compare(
    dataset: Dataset = typer.Option(Dataset.SYNTHETIC, help="Dataset to prepare and use."),
    out: Path = typer.Option(None, help="Output folder (default runs/compare-<dataset>)."),
    config: Path = typer.Option(None, help="Use this job.toml instead of preparing --dataset."),
    epochs: int = typer.Option(None, min=1, help="Override the job's train.epochs."),
    encrypted: bool = typer.Option(
        False, help="Also train the encrypted split (Paillier, train.key_bits; slow)."
    ),
    seeds: int = typer.Option(
        1, min=1, help="Train all for N seeds (job seed, +1, ...): mean and sd in the report."
    ),
) -> None:
    """Train E alone, plaintext split and centralised on the same split; write compare.json."""
    from vfl.training.compare import run_compare

    out_dir = out or Path("runs") / f"compare-{dataset.value}"
    job_file = config or _prepare_data(dataset, out_dir / "data")
    report = run_compare(
        job_file, out_dir, epochs=epochs, progress=_progress, encrypted=encrypted, seeds=seeds
    )
    k = report["k"]
    table = Table(
        title=f"{report['job']}: {report['aligned_users']} aligned users, test metrics at "
        f"the best validation epoch, against {report['test_negatives']} sampled items"
    )
    cols = ("model", f"HR@{k}", f"NDCG@{k}", "AUC", "log-loss", "best epoch", "stopped", "train s")
    for col in cols:
        table.add_column(col, justify="right")
    for name in report["models"]:
        m = report["models"][name]
        table.add_row(
            name,
            f"{m[f'hr@{k}']:.4f}",
            f"{m[f'ndcg@{k}']:.4f}",
            f"{m['auc']:.4f}",
            f"{m['logloss']:.4f}",
            str(m["best_epoch"]),
            f"{m['epochs_trained']} ({m['stopped']})",
            f"{m['wall_seconds']:.1f}",
        )
    Console(width=120).print(table)
    if "noise" in report:
        _print_noise(report["noise"], k)
    console.print(f"wrote {out_dir / 'compare.json'} and {out_dir / 'report.md'}")
