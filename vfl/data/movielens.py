"""MovieLens-100K from the ``recbole`` wheel, split vertically into an E party and a P party.

The wheel ships ``recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}``: tab-separated
files whose header names carry a type suffix (``user_id:token``, ``rating:float``,
``class:token_seq`` with space-separated genres). The package is located with
``importlib.util.find_spec`` and never imported (importing recbole pulls in heavy dependencies),
and nothing is ever downloaded.

Vertical split:

* **E** (active, ``cinema``): ``interactions`` (user_id, item_id, timestamp, rating; no label
  column, so every rating is a positive), ``items`` (one 0/1 ``genre_<name>`` column per genre,
  ``release_year`` with missing years set to the median plus a ``year_missing`` flag) and
  ``e_users`` holding only the user id (E has no user profile here).
* **P** (passive, ``profiles``): ``p_users`` (user_id, age numeric; gender, occupation and
  ``zip_region`` = first character of the zip code, categorical).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vfl.data.party_files import (
    FileFormat,
    two_party_files,
    write_party_dir,
)
from vfl.errors import DataError

RECBOLE_FIX = "pip install --no-deps recbole==1.2.1"
_DATASET_DIR = ("dataset_example", "ml-100k")
# Training settings written into job.toml. Users average ~106 ratings, so a per-user id
# embedding is learnable (collaborative filtering) and steps of 8 users already hold ~4k rows.
JOB_SETTINGS: dict[str, dict[str, object]] = {
    "model": {"embedding_dim": 32, "user_id_embedding": True},
    "train": {
        "epochs": 30,
        "users_per_step": 8,
        "learning_rate": 0.003,
        # P's demographics add little here: its bottom model learns 10x slower (chosen by
        # validation NDCG@10 over seeds 7-9, docs/benchmarks.md)
        "passive_learning_rate": 0.0003,
    },
}


@dataclass(frozen=True)
class MovieLensSummary:
    """Counts and output paths of one conversion."""

    n_interactions: int
    n_users: int
    n_items: int
    paths: dict[str, Path]


def movielens_dir() -> Path:
    """Directory of the ml-100k files inside the installed recbole package (not imported).

    Raises:
        DataError: if recbole is not installed or its wheel lacks the ml-100k files.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("recbole", None, "the recbole package is not installed", RECBOLE_FIX)
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*_DATASET_DIR)
    for kind in ("inter", "user", "item"):
        if not (folder / f"ml-100k.{kind}").is_file():
            raise DataError(str(folder / f"ml-100k.{kind}"), None, "file is missing", RECBOLE_FIX)
    return folder


def read_atomic(path: Path) -> pd.DataFrame:
    """Read one recbole atomic file as strings; ``name:type`` headers become ``name``."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    return df.rename(columns=lambda c: c.split(":", 1)[0])


def read_movielens_raw() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return the raw (interactions, users, items) tables of ml-100k, every cell a string."""
    folder = movielens_dir()
    inter, user, item = (read_atomic(folder / f"ml-100k.{k}") for k in ("inter", "user", "item"))
    return inter, user, item


def genre_column(genre: str) -> str:
    """``Children's`` -> ``genre_children_s``, ``Sci-Fi`` -> ``genre_sci_fi``."""
    return "genre_" + re.sub(r"[^a-z0-9]+", "_", genre.lower()).strip("_")


def e_items(raw_items: pd.DataFrame) -> pd.DataFrame:
    """E's item table: genre one-hot columns, release year (median-filled) and its flag."""
    genres = raw_items["class"].str.split()
    names = sorted({g for gs in genres for g in gs})
    table = pd.DataFrame({"item_id": raw_items["item_id"]})
    for name in names:
        table[genre_column(name)] = genres.map(lambda gs, n=name: int(n in gs))
    year = pd.to_numeric(raw_items["release_year"], errors="coerce")
    year = year.where(year.between(1900, 2100))
    table["release_year"] = year.fillna(year.median()).astype(int)
    table["year_missing"] = year.isna().astype(int)
    return table


def p_users(raw_users: pd.DataFrame) -> pd.DataFrame:
    """P's profile table: numeric age; gender, occupation, zip region (first zip character)."""
    return pd.DataFrame(
        {
            "user_id": raw_users["user_id"],
            "age": pd.to_numeric(raw_users["age"]).astype(int),
            "gender": raw_users["gender"],
            "occupation": raw_users["occupation"],
            "zip_region": raw_users["zip_code"].str.strip().str[:1].replace("", "unknown"),
        }
    )


def e_interactions(raw_inter: pd.DataFrame) -> pd.DataFrame:
    """E's interaction log: ids as strings, integer timestamps, float ratings."""
    return pd.DataFrame(
        {
            "user_id": raw_inter["user_id"],
            "item_id": raw_inter["item_id"],
            "timestamp": pd.to_numeric(raw_inter["timestamp"]).astype("int64"),
            "rating": pd.to_numeric(raw_inter["rating"]),
        }
    )


def convert_movielens(out_dir: Path, *, fmt: FileFormat = FileFormat.CSV) -> MovieLensSummary:
    """Write the vertically split ml-100k party files and configs into ``out_dir``.

    Raises:
        DataError: if recbole (and with it the dataset) is not installed.
    """
    raw_inter, raw_users, raw_items = read_movielens_raw()
    inter = e_interactions(raw_inter)
    tables = {
        "e_users": pd.DataFrame({"user_id": sorted(inter["user_id"].unique(), key=int)}),
        "items": e_items(raw_items),
        "interactions": inter,
        "p_users": p_users(raw_users),
    }
    active, passive = two_party_files(tables, fmt, names=("cinema", "profiles"), label_column=None)
    paths = write_party_dir(
        Path(out_dir),
        job="movielens",
        seed=7,
        active=active,
        passive=passive,
        tables=tables,
        fmt=fmt,
        settings=JOB_SETTINGS,
    )
    return MovieLensSummary(
        n_interactions=len(inter),
        n_users=len(tables["p_users"]),
        n_items=len(tables["items"]),
        paths=paths,
    )
