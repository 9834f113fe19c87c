"""Checks on a data file's columns before their values are read: repeated names, Parquet types.

Each check raises the :class:`~vfl.errors.DataError` its caller's ``error(column, problem,
fix)`` builds, so the message names the file and the column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa

from vfl.errors import DataError

ErrorFn = Callable[[str | None, str, str], DataError]


def reject_repeated_columns(error: ErrorFn, present: list[str], wanted: list[str]) -> None:
    """Raise if a declared column's name occurs more than once in the file's header.

    pandas would read the second as ``name.1`` and pyarrow refuses with "Multiple matches":
    either way one of the two would be used without a word.
    """
    for column in wanted:
        places = [i + 1 for i, name in enumerate(present) if name == column]
        if len(places) > 1:
            raise error(
                column,
                f"the column name occurs {len(places)} times in the header (columns "
                f"{', '.join(map(str, places))}), so which one to use is ambiguous",
                "rename or remove the extra column(s) so each name occurs once",
            )


def check_parquet_types(
    error: ErrorFn, schema: pa.Schema, id_columns: Sequence[str], numeric_columns: Sequence[str]
) -> None:
    """Id columns must hold text or integers; numeric features numbers, not dates/times."""
    for column in id_columns:
        kind = schema.field(column).type
        value = kind.value_type if pa.types.is_dictionary(kind) else kind
        if not (pa.types.is_string(value) or pa.types.is_large_string(value)) and not (
            pa.types.is_integer(value)
        ):
            raise error(
                column,
                f"id column of Parquet type {kind}; ids must be text or integers",
                "store the ids as strings (or integers) in the file, e.g. in pandas "
                "df[col] = df[col].astype('Int64').astype(str) for whole-number floats",
            )
    for column in numeric_columns:
        kind = schema.field(column).type
        if pa.types.is_temporal(kind):
            raise error(
                column,
                f"numeric feature of Parquet type {kind} (dates/times, not numbers)",
                "convert it to a number first (e.g. days since some date), or drop it from "
                "'numeric' in the party config",
            )
