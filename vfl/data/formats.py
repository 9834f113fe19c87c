"""File formats and the TOML writer, without pandas or numpy: light enough for every CLI command.

:mod:`vfl.data.party_files` (which needs pandas) re-exports both; ``vfl --help``, ``vfl certs``
and ``vfl keys`` import only this module.
"""

from __future__ import annotations

import json
from enum import StrEnum


class FileFormat(StrEnum):
    """On-disk format of a party data file."""

    CSV = "csv"
    PARQUET = "parquet"


def _plain_scalar(value: object) -> object:
    """A numpy scalar as the Python number it holds (``np.int64(3)`` -> ``3``); others unchanged."""
    item = getattr(value, "item", None)
    if type(value).__module__ == "numpy" and callable(item):
        return item()
    return value


def _toml_value(value: object) -> str:
    """Render a str, bool, int, float (numpy scalars too) or list of those as a TOML value."""
    value = _plain_scalar(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def _is_table_list(value: object) -> bool:
    return (
        isinstance(value, list | tuple) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def dumps_toml(tables: dict[str, dict[str, object]]) -> str:
    """Render ``{table: {key: value}}`` (one level of tables, ``None`` values skipped) as TOML.

    A value that is a list of dicts becomes an array of tables, ``[[table.key]]`` (E's
    ``[[network.partners]]``), written after the table's plain keys.
    """
    lines: list[str] = []
    for table, entries in tables.items():
        lines.append(f"[{table}]")
        plain = {k: v for k, v in entries.items() if v is not None and not _is_table_list(v)}
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in plain.items())
        lines.append("")
        for key, rows in entries.items():
            if key in plain or not isinstance(rows, list | tuple):
                continue
            for row in rows:
                lines.append(f"[[{table}.{key}]]")
                lines.extend(
                    f"{k} = {_toml_value(v)}" for k, v in dict(row).items() if v is not None
                )
                lines.append("")
    return "\n".join(lines)
