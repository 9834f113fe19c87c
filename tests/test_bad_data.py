"""Data mistakes that used to pass silently or end in a traceback: repeated column names,
wrong Parquet column types, a directory for a file, very long ids."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vfl.config.party import FeatureSchema, IdRule, load_party_config
from vfl.data.loading import load_feature_table
from vfl.data.synthetic_writer import generate_synthetic
from vfl.errors import ConfigError, DataError


def _users(path: Path, numeric: tuple[str, ...] = ("avg_ticket",)) -> FeatureSchema:
    return FeatureSchema(path=path, id_column="user_id", numeric=numeric)


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("user_id,avg_ticket,avg_ticket", "avg_ticket"),
        ("user_id,avg_ticket,user_id", "user_id"),
    ],
    ids=["feature-twice", "id-twice"],
)
def test_a_csv_column_name_given_twice_is_refused_naming_it(
    tmp_path: Path, header: str, column: str
) -> None:
    # Prepare: the second copy holds other values (999999 / other ids)
    path = tmp_path / "users.csv"
    path.write_text(f"{header}\nu1,10,999999\nu2,20,999999\n")

    # Execute
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())

    # Assert
    message = str(err.value)
    assert message.startswith(f"{path}: column '{column}'")
    assert "occurs 2 times in the header (columns" in message and "Fix:" in message


def test_a_parquet_column_name_given_twice_says_duplicated_not_field_ref(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "users.parquet"
    arrays = [pa.array(["u1", "u2"]), pa.array([10.0, 20.0]), pa.array([999999.0, 999999.0])]
    names = ["user_id", "avg_ticket", "avg_ticket"]
    pq.write_table(pa.Table.from_arrays(arrays, names=names), path)

    # Execute
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())

    # Assert
    message = str(err.value)
    assert message.startswith(f"{path}: column 'avg_ticket'") and "occurs 2 times" in message
    assert "FieldRef" not in message


@pytest.mark.parametrize(
    ("ids", "spend", "column", "words"),
    [
        (pa.array(["u1", "u2"]), pa.array([1, 2], pa.timestamp("s")), "avg_ticket", "timestamp"),
        (pa.array([12.0, 13.0]), pa.array([1.0, 2.0]), "user_id", "type double"),
        (pa.array([b"x", b"y"]), pa.array([1.0, 2.0]), "user_id", "type binary"),
    ],
    ids=["timestamps-as-feature", "float-ids", "binary-ids"],
)
def test_wrong_parquet_column_types_are_named_with_the_type_and_fix(
    tmp_path: Path, ids: pa.Array, spend: pa.Array, column: str, words: str
) -> None:
    path = tmp_path / "users.parquet"
    pq.write_table(pa.Table.from_arrays([ids, spend], names=["user_id", "avg_ticket"]), path)
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())
    message = str(err.value)
    assert message.startswith(f"{path}: column '{column}'") and words in message
    assert "Fix:" in message


def test_a_data_path_that_is_a_directory_is_called_a_directory(tmp_path: Path) -> None:
    # Prepare: P's users path points at the data directory itself
    generate_synthetic(tmp_path / "data", users=60, items=40, seed=1)
    config = tmp_path / "data" / "p_party.toml"
    text = config.read_text()
    config.write_text(re.sub(r'(?m)^path = "p_users\.csv"', 'path = "."', text, count=1))

    # Execute
    with pytest.raises(ConfigError) as err:
        load_party_config(config)

    # Assert
    message = str(err.value)
    assert "users.path" in message and "is a directory, not a file" in message
    assert "file not found" not in message


def test_a_config_path_that_is_a_directory_is_called_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_party_config(tmp_path)


def test_a_very_long_id_is_refused_with_its_line_not_a_memory_error(tmp_path: Path) -> None:
    # Prepare: 200,000 ids, one of 10,000 characters (a fixed-width array would need 7.45 GiB)
    n = 200_000
    ids = [f"u{i}" for i in range(n)]
    ids[123_456] = "x" * 10_000
    path = tmp_path / "users.csv"
    path.write_text("user_id,avg_ticket\n" + "".join(f"{i},1\n" for i in ids))

    # Execute
    with pytest.raises(DataError) as err:
        load_feature_table(_users(path), IdRule())

    # Assert: the line (header = line 1), the length, the limit and the key to raise it
    message = str(err.value)
    assert "longer than 256 characters" in message and "10000 characters" in message
    assert "line 123458" in message and "[ids] max_length" in message


def test_long_ids_under_a_raised_limit_are_kept_without_padding(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("user_id,avg_ticket\n" + "x" * 10_000 + ",1\n" + "u2,2\n")
    table = load_feature_table(_users(path), IdRule(max_length=20_000))
    assert table.ids.dtype == np.dtype(object)  # Python strings, not '<U10000' per id
    assert [len(i) for i in table.ids] == [10_000, 2]
