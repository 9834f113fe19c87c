"""Load a party's CSV/Parquet files into validated, encoded in-memory tables.

1. Read only the declared columns; ids and categoricals as strings, ids with no NA guessing
   (an id such as ``"NA"`` stays an id).
2. Normalise ids with the party's ``[ids]`` rule; reject empty and duplicate ids.
3. Transform numeric features as the party's kind says (:mod:`vfl.kinds`; both kinds today
   standardise with the mean and std of this party's own rows, std 0 -> 1)
   into float32; map categorical values to codes ``0..K-1`` in sorted order of their string.
4. For E's log: every user and item must be in the users/items tables, timestamps become
   float seconds, labels must be 0/1 (no label column = all positives).

Row positions in messages are "line N" for CSV (the header is line 1) and "row N" (1-based)
for Parquet. Every problem raises :class:`DataError` naming the file, column and fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vfl.config.party import FeatureSchema, FileFormat, IdRule, InteractionSchema, PartyConfig, Role
from vfl.data.columns import check_parquet_types, reject_repeated_columns
from vfl.data.sniff import diagnose_unreadable, other_separator
from vfl.data.tables import ActiveData, FeatureTable, InteractionLog, PassiveData
from vfl.errors import DataError
from vfl.kinds import NumericTransform, party_kind

_EXAMPLES = 5
# cells read as missing in feature/log columns (never in id columns)
_NA_TOKENS = ("", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "NULL", "null", "None", "#N/A", "<NA>")


class _Source:
    """A data file being read: path, format, id columns (str, no NA guessing), text columns."""

    def __init__(
        self,
        path: Path,
        fmt: FileFormat,
        id_columns: Sequence[str],
        text_columns: Sequence[str] = (),
        numeric_columns: Sequence[str] = (),
    ) -> None:
        self.path, self.fmt = path, fmt
        self.id_columns, self.text_columns = tuple(id_columns), tuple(text_columns)
        self.numeric_columns = tuple(numeric_columns)

    def where(self, positions: Sequence[int] | np.ndarray) -> str:
        """Describe 0-based data positions as file rows, e.g. 'lines 2, 5'."""
        shown = list(positions)[:_EXAMPLES]
        more = ", ..." if len(positions) > _EXAMPLES else ""
        if self.fmt is FileFormat.CSV:
            noun = "line" if len(shown) == 1 else "lines"
            return f"{noun} {', '.join(str(p + 2) for p in shown)}{more}"
        noun = "row" if len(shown) == 1 else "rows"
        return f"{noun} {', '.join(str(p + 1) for p in shown)}{more}"

    def error(self, column: str | None, problem: str, fix: str) -> DataError:
        """A DataError about this file."""
        return DataError(str(self.path), column, problem, fix)


def load_party_data(cfg: PartyConfig) -> ActiveData | PassiveData:
    """Load everything a party config declares, transformed as its kind says (:mod:`vfl.kinds`).

    Raises:
        ConfigError: the config's ``party.kind`` does not exist or is of the other role.
        DataError: any file is unreadable, empty, lacks a column or holds a bad value.
    """
    kind = party_kind(cfg)
    users = load_feature_table(cfg.users, cfg.ids, transform=kind.numeric)
    if cfg.role is Role.PASSIVE:
        return PassiveData(users=users, kind=kind.name)
    if cfg.items is None or cfg.interactions is None:  # guaranteed by PartyConfig
        raise ValueError("active party config without [items] or [interactions]")
    items = load_feature_table(cfg.items, cfg.ids, transform=kind.numeric)
    log = load_interactions(cfg.interactions, cfg.ids, users=users, items=items)
    return ActiveData(users=users, items=items, interactions=log, kind=kind.name)


def load_feature_table(
    schema: FeatureSchema, ids_rule: IdRule, *, transform: NumericTransform | None = None
) -> FeatureTable:
    """Read a users/items file into a :class:`FeatureTable` (numeric columns through
    ``transform``, by default :func:`standardise`; categorical ones encoded).

    Raises:
        DataError: unreadable or empty file, missing column, empty or duplicate id, missing
            feature value, non-numeric value in a numeric column.
    """
    transform = transform or standardise
    source = _Source(
        schema.path, schema.file_format, (schema.id_column,), schema.categorical, schema.numeric
    )
    frame = _read(source, (schema.id_column, *schema.feature_columns))
    ids = _normalised_ids(source, frame[schema.id_column], schema.id_column, ids_rule)
    _reject_duplicates(source, ids, schema.id_column)
    numeric = np.zeros((len(frame), len(schema.numeric)), dtype=np.float32)
    for j, column in enumerate(schema.numeric):
        numeric[:, j] = transform(_numbers(source, frame[column], column, ids))
    categorical = np.zeros((len(frame), len(schema.categorical)), dtype=np.int64)
    cardinalities: list[int] = []
    for j, column in enumerate(schema.categorical):
        codes, cardinality = _codes(source, frame[column], column, ids)
        categorical[:, j] = codes
        cardinalities.append(cardinality)
    return FeatureTable(
        ids=ids,
        numeric=numeric,
        numeric_names=tuple(schema.numeric),
        categorical=categorical,
        categorical_names=tuple(schema.categorical),
        cardinalities=tuple(cardinalities),
    )


def load_interactions(
    schema: InteractionSchema, ids_rule: IdRule, *, users: FeatureTable, items: FeatureTable
) -> InteractionLog:
    """Read E's interaction log, checking it only refers to known users and items.

    Raises:
        DataError: unreadable or empty file, missing column, empty or unknown user/item id,
            missing or unparseable timestamp, label other than 0/1.
    """
    source = _Source(schema.path, schema.file_format, (schema.user_column, schema.item_column))
    frame = _read(source, schema.columns)
    user_ids = _normalised_ids(source, frame[schema.user_column], schema.user_column, ids_rule)
    item_ids = _normalised_ids(source, frame[schema.item_column], schema.item_column, ids_rule)
    _reject_unknown(source, user_ids, users, schema.user_column, "users")
    _reject_unknown(source, item_ids, items, schema.item_column, "items")
    times = _timestamps(source, frame[schema.time_column], schema.time_column)
    if schema.label_column is None:
        labels = np.ones(len(frame), dtype=np.int8)
    else:
        labels = _labels(source, frame[schema.label_column], schema.label_column)
    return InteractionLog(user_ids=user_ids, item_ids=item_ids, timestamps=times, labels=labels)


# -- reading ---------------------------------------------------------------------------------


def _read(source: _Source, columns: Sequence[str]) -> pd.DataFrame:
    """Read ``columns`` from the file; raise if unreadable, empty or lacking a column."""
    wanted = list(dict.fromkeys(columns))
    try:
        empty = source.path.stat().st_size == 0
        present = [] if empty else _header(source)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise _unreadable(source, exc) from exc
    if empty:
        raise source.error(None, "the file is empty", "write a header row and data rows into it")
    _require_columns(source, present, wanted)
    reject_repeated_columns(source.error, present, wanted)
    try:
        if source.fmt is FileFormat.PARQUET:
            schema = pq.read_schema(source.path)
            check_parquet_types(source.error, schema, source.id_columns, source.numeric_columns)
        frame = _read_columns(source, wanted)
    except DataError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise _unreadable(source, exc) from exc
    if len(frame) == 0:
        raise source.error(None, "the file has no data rows", "add rows below the header")
    return frame.reset_index(drop=True)


def _unreadable(source: _Source, exc: Exception) -> DataError:
    """The error for a file pandas/pyarrow cannot parse (naming the mix-up if recognised)."""
    known = diagnose_unreadable(source.path, source.fmt.value, exc)
    if known is not None:
        return source.error(None, *known)
    return source.error(
        None,
        f"cannot read the file as {source.fmt.value} ({exc})",
        f"check that it is a readable {source.fmt.value} file with a header row",
    )


def _header(source: _Source) -> list[str]:
    """Column names in the file, as written (a repeated name is listed each time)."""
    if source.fmt is FileFormat.PARQUET:
        return list(pq.read_schema(source.path).names)
    first = pd.read_csv(source.path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return [str(c) for c in first.iloc[0]]


def _require_columns(source: _Source, present: list[str], wanted: list[str]) -> None:
    """Raise for the first wanted column the file lacks."""
    for column in wanted:
        if column not in present:
            csv = source.fmt is FileFormat.CSV
            separator = other_separator(present) if csv else None
            fix = (
                f"save the file comma-separated (it seems to use {separator!r})"
                if separator
                else "rename the column in the file or fix the column name in the party config"
            )
            raise source.error(column, f"column not found; the file has columns {present}", fix)


def _read_columns(source: _Source, wanted: list[str]) -> pd.DataFrame:
    """Read the wanted columns; id columns are str and never NA."""
    if source.fmt is FileFormat.PARQUET:
        table = pq.read_table(source.path, columns=wanted)
        frame: pd.DataFrame = table.to_pandas()
        for column in source.id_columns:  # Python ints and str: never '12.0' for an int id
            frame[column] = [_id_text(v) for v in table.column(column).to_pylist()]
        return frame
    guessed = {c: list(_NA_TOKENS) for c in wanted if c not in source.id_columns}
    return pd.read_csv(
        source.path,
        usecols=wanted,
        dtype={c: str for c in (*source.id_columns, *source.text_columns)},
        keep_default_na=False,
        na_values=guessed,
    )


def _id_text(value: object) -> str:
    """String form of a Parquet id cell; null becomes '' (reported as an empty id)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


# -- ids -------------------------------------------------------------------------------------


def _normalised_ids(source: _Source, raw: pd.Series, column: str, rule: IdRule) -> np.ndarray:
    """Apply the id rule; reject empty ids and ids above ``[ids] max_length``.

    The ids stay Python strings (an object array): a fixed-width array would pad every id
    to the longest one.
    """
    ids = np.array([rule.normalise(str(v)) for v in raw], dtype=object)
    lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise source.error(
            column,
            f"{len(empty)} empty id(s) at {source.where(empty)}",
            "give every row an id (or drop those rows)",
        )
    long = np.flatnonzero(lengths > rule.max_length)
    if len(long):
        raise source.error(
            column,
            f"{len(long)} id(s) longer than {rule.max_length} characters, e.g. one of "
            f"{int(lengths[long[0]])} characters at {source.where(long)}",
            "fix those ids, or raise [ids] max_length in the party config if they are real",
        )
    return ids


def _reject_duplicates(source: _Source, ids: np.ndarray, column: str) -> None:
    """Raise if any normalised id occurs more than once."""
    values, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    duplicated = np.flatnonzero(counts > 1)
    if len(duplicated) == 0:
        return
    first = duplicated[0]
    rows = np.flatnonzero(inverse == first)
    raise source.error(
        column,
        f"{len(duplicated)} id(s) occur more than once after normalisation; "
        f"e.g. '{values[first]}' at {source.where(rows)}",
        "keep one row per id (ids are compared after the [ids] strip/case rule)",
    )


def _reject_unknown(
    source: _Source, ids: np.ndarray, table: FeatureTable, column: str, table_name: str
) -> None:
    """Raise if the log names ids missing from the users or items table."""
    # a hash lookup: np.isin on object (string) arrays compares every pair, O(rows x ids)
    # (30 min for a 100k-user log), where this is linear
    unknown = np.flatnonzero(~pd.Series(ids, dtype=object).isin(table.ids).to_numpy())
    if len(unknown) == 0:
        return
    examples = list(dict.fromkeys(str(i) for i in ids[unknown]))
    raise source.error(
        column,
        f"{len(unknown)} row(s) refer to {len(examples)} id(s) not in the {table_name} table, "
        f"e.g. {examples[:_EXAMPLES]} at {source.where(unknown)}",
        f"add them to the {table_name} file or drop those rows from the log",
    )


# -- features --------------------------------------------------------------------------------


def _reject_missing(source: _Source, values: pd.Series, column: str, ids: np.ndarray) -> None:
    """Raise if a feature column has NaN/empty cells."""
    text = values.astype(object)
    missing = np.flatnonzero(values.isna().to_numpy() | (text.map(_is_blank).to_numpy()))
    if len(missing):
        raise source.error(
            column,
            f"{len(missing)} missing value(s) at {source.where(missing)} "
            f"(ids {[str(i) for i in ids[missing][:_EXAMPLES]]})",
            "fill in or impute the missing values before loading",
        )


def _quoted(value: object) -> str:
    """A cell value for a message, e.g. 'lots'."""
    return f"'{value}'"


def _is_blank(value: object) -> bool:
    """True for strings that are empty after stripping."""
    return isinstance(value, str) and value.strip() == ""


def _numbers(source: _Source, values: pd.Series, column: str, ids: np.ndarray) -> np.ndarray:
    """Column as float64; reject missing, non-numeric and infinite values."""
    _reject_missing(source, values, column, ids)
    if values.dtype == bool:
        values = values.astype(np.int8)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if len(bad):
        raise source.error(
            column,
            f"non-numeric or infinite value {_quoted(values.iloc[bad[0]])} at "
            f"{source.where(bad[:1])} ({len(bad)} bad value(s) in total)",
            "make the column numeric, or list it under 'categorical' in the party config",
        )
    return numbers


def standardise(numbers: np.ndarray) -> np.ndarray:
    """z-score with this column's mean and (population) std; std 0 -> 1. Returns float32."""
    std = float(numbers.std())
    scale = std if std > 0 else 1.0
    return np.asarray((numbers - numbers.mean()) / scale, dtype=np.float32)


def _codes(
    source: _Source, values: pd.Series, column: str, ids: np.ndarray
) -> tuple[np.ndarray, int]:
    """Categorical codes 0..K-1 in sorted order of the values' string form, and K."""
    _reject_missing(source, values, column, ids)
    text = np.array([str(v) for v in values], dtype=str)
    categories, codes = np.unique(text, return_inverse=True)
    return codes.astype(np.int64), len(categories)


# -- log columns -----------------------------------------------------------------------------


def _timestamps(source: _Source, values: pd.Series, column: str) -> np.ndarray:
    """Numeric timestamps as float64, or datetimes as float seconds since the epoch (UTC)."""
    missing = np.flatnonzero(values.isna().to_numpy())
    if len(missing):
        raise source.error(
            column,
            f"{len(missing)} missing timestamp(s) at {source.where(missing)}",
            "give every event a time",
        )
    is_datetime = pd.api.types.is_datetime64_any_dtype(values)
    numbers = pd.Series(np.nan) if is_datetime else pd.to_numeric(values, errors="coerce")
    if not np.isnan(numbers.iloc[0]):  # the first row decides: numbers or date/times
        bad = np.flatnonzero(numbers.isna().to_numpy())
        if len(bad) == 0:
            return numbers.to_numpy(dtype=np.float64)
        raise _bad_time(source, values, column, bad, "a number")
    moments = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = np.flatnonzero(moments.isna().to_numpy())
    if len(bad):
        raise _bad_time(source, values, column, bad, "a date/time")
    epoch = pd.Timestamp(0, tz="UTC")
    return ((moments - epoch) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def _bad_time(
    source: _Source, values: pd.Series, column: str, bad: np.ndarray, kind: str
) -> DataError:
    """The error for timestamps that do not parse as ``kind``, the kind of the first row."""
    return source.error(
        column,
        f"{_quoted(values.iloc[bad[0]])} at {source.where(bad[:1])} is not {kind} like the "
        f"first row ({len(bad)} such value(s))",
        "use numbers (e.g. Unix seconds) or ISO dates like 2024-03-01T12:00:00, not a mix",
    )


def _labels(source: _Source, values: pd.Series, column: str) -> np.ndarray:
    """Labels as int8; every value must be 0 or 1."""
    if values.dtype == bool:
        return values.to_numpy(dtype=np.int8)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isin(numbers, (0.0, 1.0)))
    if len(bad):
        raise source.error(
            column,
            f"label {_quoted(values.iloc[bad[0]])} at {source.where(bad[:1])} is not 0 or 1 "
            f"({len(bad)} such value(s))",
            "use 1 for a positive (purchase/click) and 0 for a negative",
        )
    return numbers.astype(np.int8)
