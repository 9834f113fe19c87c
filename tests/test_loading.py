"""Loading party data files: encoding, normalisation, and one test per DataError case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vfl.config.party import (
    Case,
    FeatureSchema,
    IdRule,
    InteractionSchema,
    load_party_config,
)
from vfl.data.loading import load_feature_table, load_interactions, load_party_data
from vfl.data.tables import ActiveData, FeatureTable, PassiveData
from vfl.errors import DataError

USERS = "user_id,spend,card\nu1,1,visa\nu2,2,amex\nu3,3,visa\n"
ITEMS = "item_id,price,category\ni1,10,toys\ni2,10,books\n"
LOG = "user_id,item_id,ts,purchased\nu1,i1,100,1\nu2,i2,200,0\nu3,i1,300,1\n"


def _csv(tmp_path: Path, text: str, name: str = "users.csv") -> Path:
    """Write a CSV file."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _users(path: Path, **overrides: object) -> FeatureSchema:
    """The users schema of USERS, pointing at ``path``."""
    fields: dict[str, object] = {
        "path": path,
        "id_column": "user_id",
        "numeric": ("spend",),
        "categorical": ("card",),
    }
    return FeatureSchema.model_validate({**fields, **overrides})


def _log_schema(path: Path, label: str | None = "purchased") -> InteractionSchema:
    """The interactions schema of LOG, pointing at ``path``."""
    return InteractionSchema(
        path=path,
        user_column="user_id",
        item_column="item_id",
        time_column="ts",
        label_column=label,
    )


def _tables(tmp_path: Path) -> tuple[FeatureTable, FeatureTable]:
    """Users and items tables from USERS and ITEMS."""
    users = load_feature_table(_users(_csv(tmp_path, USERS)), IdRule())
    items_schema = FeatureSchema(
        path=_csv(tmp_path, ITEMS, "items.csv"),
        id_column="item_id",
        numeric=("price",),
        categorical=("category",),
    )
    return users, load_feature_table(items_schema, IdRule())


def _check(err: pytest.ExceptionInfo[DataError], file: Path, column: str | None) -> str:
    """Assert the error names ``file`` and ``column`` and gives a fix; return the message."""
    message = str(err.value)
    assert err.value.file == str(file)
    assert err.value.column == column
    assert str(file) in message
    if column is not None:
        assert f"'{column}'" in message
    assert "Fix:" in message
    return message


# -- happy paths ----------------------------------------------------------------------------


def test_numeric_features_are_standardised(tmp_path: Path) -> None:
    # Prepare
    text = "user_id,a,flat\nx,1,5\ny,2,5\nz,3,5\nw,6,5\n"
    schema = _users(_csv(tmp_path, text), numeric=("a", "flat"), categorical=())

    # Execute
    table = load_feature_table(schema, IdRule())

    # Assert
    raw = np.array([1.0, 2.0, 3.0, 6.0])
    assert table.numeric.dtype == np.float32
    np.testing.assert_allclose(table.numeric[:, 0], (raw - raw.mean()) / raw.std(), rtol=1e-6)
    np.testing.assert_array_equal(table.numeric[:, 1], np.zeros(4))  # std 0 -> divide by 1
    assert table.numeric_names == ("a", "flat")


def test_categorical_codes_follow_sorted_string_order(tmp_path: Path) -> None:
    # Prepare: "10" sorts before "2" as a string
    text = "user_id,card,level\na,visa,2\nb,amex,10\nc,visa,1\nd,jcb,2\n"
    schema = _users(_csv(tmp_path, text), numeric=(), categorical=("card", "level"))

    # Execute
    table = load_feature_table(schema, IdRule())

    # Assert
    assert table.categorical.dtype == np.int64
    np.testing.assert_array_equal(table.categorical[:, 0], [2, 0, 2, 1])
    np.testing.assert_array_equal(table.categorical[:, 1], [2, 1, 0, 2])
    assert table.cardinalities == (3, 3)
    assert table.categorical_names == ("card", "level")


def test_ids_are_normalised_and_na_is_an_id(tmp_path: Path) -> None:
    text = "user_id,spend,card\n  AbC ,1,visa\nNA,2,amex\nnull,3,visa\n"
    schema = _users(_csv(tmp_path, text))
    table = load_feature_table(schema, IdRule(strip=True, case=Case.LOWER))
    assert list(table.ids) == ["abc", "na", "null"]
    kept = load_feature_table(schema, IdRule(strip=False, case=Case.KEEP))
    assert list(kept.ids) == ["  AbC ", "NA", "null"]


def test_parquet_matches_csv(tmp_path: Path) -> None:
    # Prepare: integer ids in parquet become their string form
    frame = pd.DataFrame({"user_id": [7, 8, 9], "spend": [1.0, 2.0, 3.0], "card": ["v", "a", "v"]})
    frame.to_parquet(tmp_path / "users.parquet")
    csv = _csv(tmp_path, "user_id,spend,card\n7,1,v\n8,2,a\n9,3,v\n")

    # Execute
    from_parquet = load_feature_table(_users(tmp_path / "users.parquet"), IdRule())
    from_csv = load_feature_table(_users(csv), IdRule())

    # Assert
    assert list(from_parquet.ids) == ["7", "8", "9"]
    np.testing.assert_array_equal(from_parquet.numeric, from_csv.numeric)
    np.testing.assert_array_equal(from_parquet.categorical, from_csv.categorical)


def test_interactions_numeric_times_and_labels(tmp_path: Path) -> None:
    users, items = _tables(tmp_path)
    log = load_interactions(
        _log_schema(_csv(tmp_path, LOG, "log.csv")), IdRule(), users=users, items=items
    )
    assert list(log.user_ids) == ["u1", "u2", "u3"] and list(log.item_ids) == ["i1", "i2", "i1"]
    np.testing.assert_array_equal(log.timestamps, [100.0, 200.0, 300.0])
    assert log.timestamps.dtype == np.float64
    np.testing.assert_array_equal(log.labels, [1, 0, 1])
    assert log.labels.dtype == np.int8


def test_interactions_datetimes_and_implicit_labels(tmp_path: Path) -> None:
    users, items = _tables(tmp_path)
    text = "user_id,item_id,ts\n U1 ,i1,1970-01-01T00:01:40\nu2,i2,1970-01-02\n"
    log = load_interactions(
        _log_schema(_csv(tmp_path, text, "log.csv"), label=None),
        IdRule(case=Case.LOWER),
        users=users,
        items=items,
    )
    assert list(log.user_ids) == ["u1", "u2"]
    np.testing.assert_allclose(log.timestamps, [100.0, 86400.0])
    np.testing.assert_array_equal(log.labels, [1, 1])


def test_load_party_data_from_configs(tmp_path: Path) -> None:
    # Prepare
    _csv(tmp_path, USERS)
    _csv(tmp_path, ITEMS, "items.csv")
    pd.read_csv(tmp_path / "items.csv").to_parquet(tmp_path / "items.parquet")
    _csv(tmp_path, LOG, "log.csv")
    base = '[users]\npath = "users.csv"\nid_column = "user_id"\nnumeric = ["spend"]\n'
    (tmp_path / "p.toml").write_text(f'[party]\nname = "p"\nrole = "passive"\n{base}')
    active = (
        f'[party]\nname = "e"\nrole = "active"\n{base}'
        '[items]\npath = "items.parquet"\nid_column = "item_id"\ncategorical = ["category"]\n'
        '[interactions]\npath = "log.csv"\nuser_column = "user_id"\nitem_column = "item_id"\n'
        'time_column = "ts"\n'
    )
    (tmp_path / "e.toml").write_text(active)

    # Execute
    passive = load_party_data(load_party_config(tmp_path / "p.toml"))
    shop = load_party_data(load_party_config(tmp_path / "e.toml"))

    # Assert
    assert isinstance(passive, PassiveData) and len(passive.users) == 3
    assert isinstance(shop, ActiveData)
    assert list(shop.items.ids) == ["i1", "i2"] and shop.items.cardinalities == (2,)
    assert len(shop.interactions) == 3 and shop.interactions.labels.tolist() == [1, 1, 1]


# -- errors ---------------------------------------------------------------------------------


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    path.write_text("user_id,spend\nu1,1\n")
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())
    assert "cannot read" in _check(err, path, None)


def test_empty_file(tmp_path: Path) -> None:
    path = _csv(tmp_path, "")
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())
    assert "empty" in _check(err, path, None)


def test_header_only_file(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,spend,card\n")
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())
    assert "no data rows" in _check(err, path, None)


def test_missing_column_lists_present_ones(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,spnd,card\nu1,1,visa\n")
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())
    assert "['user_id', 'spnd', 'card']" in _check(err, path, "spend")


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("user_id,spend,card\nu1,1,visa\nu2,,amex\nu3,NA,visa\n", "spend"),
        ("user_id,spend,card\nu1,1,visa\nu2,2,\nu3,3,nan\n", "card"),
    ],
)
def test_missing_feature_values(tmp_path: Path, text: str, column: str) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())
    message = _check(err, path, column)
    assert "2 missing value(s) at lines 3, 4" in message
    assert "['u2', 'u3']" in message


def test_non_numeric_value(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,spend,card\nu1,1,visa\nu2,lots,amex\n")
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())
    assert "'lots' at line 3" in _check(err, path, "spend")


def test_duplicate_id_after_normalisation(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,spend,card\nU1,1,visa\nu2,2,amex\n u1,3,visa\n")
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule(case=Case.LOWER))
    assert "'u1' at lines 2, 4" in _check(err, path, "user_id")


def test_empty_id(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,spend,card\nu1,1,visa\n  ,2,amex\n")
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())
    assert "1 empty id(s) at line 3" in _check(err, path, "user_id")


def test_null_id_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pd.DataFrame({"user_id": ["a", None], "spend": [1, 2], "card": ["v", "v"]}).to_parquet(path)
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())
    assert "empty id(s) at row 2" in _check(err, path, "user_id")


@pytest.mark.parametrize(
    ("row", "column", "fragment"),
    [
        ("u9,i1,400,1", "user_id", "1 id(s) not in the users table, e.g. ['u9']"),
        ("u1,i7,400,1", "item_id", "1 id(s) not in the items table, e.g. ['i7']"),
        ("u1,i1,yesterday-ish,1", "ts", "'yesterday-ish' at line 5"),
        ("u1,i1,,1", "ts", "1 missing timestamp(s) at line 5"),
        ("u1,i1,400,2", "purchased", "label '2' at line 5"),
    ],
)
def test_bad_interaction_rows(tmp_path: Path, row: str, column: str, fragment: str) -> None:
    users, items = _tables(tmp_path)
    path = _csv(tmp_path, LOG + row + "\n", "log.csv")
    with pytest.raises(DataError) as err:
        load_interactions(_log_schema(path), IdRule(), users=users, items=items)
    assert fragment in _check(err, path, column)


def test_parquet_datetime_timestamps_and_bool_labels(tmp_path: Path) -> None:
    # Prepare
    users, items = _tables(tmp_path)
    path = tmp_path / "log.parquet"
    pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["i1", "i2"],
            "ts": pd.to_datetime(["1970-01-01 00:00:10", "1970-01-01 00:01:00"]),
            "purchased": [True, False],
        }
    ).to_parquet(path)

    # Execute
    log = load_interactions(_log_schema(path), IdRule(), users=users, items=items)

    # Assert
    np.testing.assert_allclose(log.timestamps, [10.0, 60.0])
    np.testing.assert_array_equal(log.labels, [1, 0])


def test_bad_date_after_date_rows(tmp_path: Path) -> None:
    users, items = _tables(tmp_path)
    text = "user_id,item_id,ts\nu1,i1,2024-03-01\nu2,i2,2024-13-45\n"
    path = _csv(tmp_path, text, "log.csv")
    with pytest.raises(DataError) as err:
        load_interactions(_log_schema(path, label=None), IdRule(), users=users, items=items)
    assert "'2024-13-45' at line 3 is not a date/time" in _check(err, path, "ts")


def test_infinite_numeric_value(tmp_path: Path) -> None:
    path = _csv(tmp_path, "user_id,spend,card\nu1,1,visa\nu2,inf,amex\n")
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())
    assert "'inf' at line 3" in _check(err, path, "spend")


def test_categorical_read_as_text(tmp_path: Path) -> None:
    # "01" and "1" are different categories, not both the number 1
    path = _csv(tmp_path, "user_id,spend,card\nu1,1,01\nu2,2,1\nu3,3,01\n")
    table = load_feature_table(_users(path), IdRule())
    np.testing.assert_array_equal(table.categorical[:, 0], [0, 1, 0])
    assert table.cardinalities == (2,)
