"""MovieLens-100K from the recbole wheel: raw counts, vertical split, NaN-free files."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

from vfl.data.party_files import FileFormat, read_table

if importlib.util.find_spec("recbole") is None:
    pytest.skip(
        "recbole is not installed (pip install --no-deps recbole==1.2.1)", allow_module_level=True
    )

from vfl.data.movielens import convert_movielens, genre_column, read_movielens_raw

N_INTER, N_USERS, N_ITEMS = 100_000, 943, 1_682
STEMS = ("e_users", "items", "interactions", "p_users")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Convert once to CSV; return the summary, the output dir and the four tables."""
    out = tmp_path_factory.mktemp("ml")
    summary = convert_movielens(out, fmt=FileFormat.CSV)
    id_columns = {
        "e_users": ["user_id"],
        "items": ["item_id"],
        "p_users": ["user_id"],
        "interactions": ["user_id", "item_id"],
    }
    tables = {s: read_table(out / f"{s}.csv", str_columns=c) for s, c in id_columns.items()}
    return {"summary": summary, "out": out, **tables}


def test_raw_counts_without_importing_recbole() -> None:
    inter, users, items = read_movielens_raw()
    assert (len(inter), len(users), len(items)) == (N_INTER, N_USERS, N_ITEMS)
    assert {"user_id", "item_id", "rating", "timestamp"} <= set(inter.columns)
    assert "recbole" not in sys.modules


def test_converted_counts(converted: dict) -> None:
    s = converted["summary"]
    assert (s.n_interactions, s.n_users, s.n_items) == (N_INTER, N_USERS, N_ITEMS)
    assert len(converted["interactions"]) == N_INTER
    assert len(converted["items"]) == N_ITEMS
    assert len(converted["p_users"]) == N_USERS == len(converted["e_users"])


def test_every_user_is_at_p_and_every_item_in_catalogue(converted: dict) -> None:
    inter = converted["interactions"]
    assert set(inter["user_id"]) == set(converted["p_users"]["user_id"])
    assert set(inter["item_id"]) <= set(converted["items"]["item_id"])


def test_genres_one_hot_and_years_filled(converted: dict) -> None:
    items = converted["items"]
    genres = [c for c in items.columns if c.startswith("genre_")]
    assert len(genres) == 19 and genre_column("Children's") in genres
    assert set(items[genres].stack().unique()) <= {0, 1}
    assert (items[genres].sum(axis=1) >= 1).all()
    assert items["year_missing"].sum() >= 1  # the wheel has unparsable years ("unkonwn", "V")
    assert items["release_year"].between(1900, 2100).all()


def test_no_nan_anywhere(converted: dict) -> None:
    for stem in STEMS:
        assert not converted[stem].isna().any().any(), stem


def test_configs_split_vertically(converted: dict) -> None:
    e_cfg = tomllib.loads((converted["out"] / "e_party.toml").read_text())
    p_cfg = tomllib.loads((converted["out"] / "p_party.toml").read_text())
    assert e_cfg["users"]["numeric"] == [] and e_cfg["users"]["categorical"] == []
    assert "label_column" not in e_cfg["interactions"]  # every rating is a positive
    assert p_cfg["users"]["numeric"] == ["age"]
    assert p_cfg["users"]["categorical"] == ["gender", "occupation", "zip_region"]
    assert (converted["p_users"]["zip_region"].astype(str).str.len() == 1).all()
    assert "rating" in converted["interactions"].columns
    assert "age" not in converted["e_users"].columns


def test_parquet_output(tmp_path: Path) -> None:
    summary = convert_movielens(tmp_path, fmt=FileFormat.PARQUET)
    assert summary.paths["interactions"].suffix == ".parquet"
    assert len(read_table(summary.paths["interactions"])) == N_INTER


def test_missing_recbole_raises_data_error_with_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from vfl.data import movielens
    from vfl.errors import DataError

    monkeypatch.setattr(movielens.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=re.escape("pip install --no-deps recbole==1.2.1")):
        read_movielens_raw()
