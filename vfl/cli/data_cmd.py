"""``vfl data ...``: make datasets (synthetic, MovieLens-100K) with ready party configs."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Generate or convert datasets into party files plus party configs.")
