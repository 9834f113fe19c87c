"""``vfl data ...``: make datasets (synthetic, MovieLens-100K) with ready party configs."""

from __future__ import annotations

from pathlib import Path

import typer

from vfl.data.formats import FileFormat
from vfl.errors import ConfigError

data_app = typer.Typer(help="Generate or convert datasets into party files plus party configs.")


def _print_paths(paths: dict[str, Path]) -> None:
    """Print one ``name: path`` line per written file."""
    for name, path in paths.items():
        typer.echo(f"  {name:<13} {path}")


def _check_range(option: str, value: float, low: float, high: float | None) -> None:
    """Raise ConfigError naming the option if ``value`` is outside ``[low, high]``."""
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise ConfigError("command line", option, f"{value:g} is out of range", f"use {bound}")


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    users: int = typer.Option(4000, "--users", help="Customers in the union of E and P."),
    items: int = typer.Option(400, "--items", help="Items in E's catalogue."),
    overlap: float = typer.Option(0.8, "--overlap", help="Fraction of the union held by both."),
    seed: int = typer.Option(7, "--seed", help="Random seed (output is deterministic in it)."),
    fmt: FileFormat = typer.Option(FileFormat.CSV, "--format", help="File format."),
    parties: int = typer.Option(
        2, "--parties", help="2, or 3 to add a logistics partner (l_users, l_party.toml)."
    ),
    third_share: float = typer.Option(
        0.5, "--third-share", help="With --parties 3: the share of the union the third knows."
    ),
    sparse: bool = typer.Option(
        False, "--sparse", help="Sparse histories: a median of 3 purchases a customer, not 9."
    ),
) -> None:
    """Generate synthetic e-commerce (E) + payment (P) data with a known ground truth."""
    from vfl.data.synthetic import Coefficients
    from vfl.data.synthetic_writer import generate_synthetic

    _check_range("--users", users, 4, None)
    _check_range("--items", items, 30, None)
    _check_range("--overlap", overlap, 0.001, 1.0)
    _check_range("--parties", parties, 2, 3)
    _check_range("--third-share", third_share, 0.001, 1.0)
    s = generate_synthetic(
        out,
        users=users,
        items=items,
        overlap=overlap,
        seed=seed,
        fmt=fmt,
        third_party=third_share if parties == 3 else None,
        coef=Coefficients.sparse() if sparse else None,
    )
    typer.echo(
        f"synthetic: {s.n_union} customers, {s.n_shared} shared "
        f"({s.n_shared / s.n_union:.0%}); E {s.n_e_users} users, P {s.n_p_users} users; "
        f"{s.n_items} items; {s.n_interactions} interactions ({s.n_purchases} purchases)"
    )
    typer.echo(
        f"oracle HR@10 vs 99 unseen: all latents {s.oracle.hr10['all']:.3f}, "
        f"E-only {s.oracle.hr10['e_only']:.3f}, P-only {s.oracle.hr10['p_only']:.3f}"
    )
    _print_paths(s.paths)


@data_app.command("movielens")
def movielens(
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    fmt: FileFormat = typer.Option(FileFormat.CSV, "--format", help="File format."),
) -> None:
    """Split MovieLens-100K (from the recbole wheel) into E (ratings, movies) and P (profiles)."""
    from vfl.data.movielens import convert_movielens

    s = convert_movielens(out, fmt=fmt)
    typer.echo(
        f"movielens-100k: {s.n_interactions} interactions, {s.n_items} items at E; "
        f"{s.n_users} user profiles at P"
    )
    _print_paths(s.paths)
