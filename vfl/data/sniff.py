"""Why a data file cannot be read: recognise the usual mix-ups and say how to fix them.

Used by :mod:`vfl.data.loading` after pandas/pyarrow failed (or found a single column), so
the error names the real cause instead of a parser's message:

* a ``.parquet`` file that is really text (CSV saved under the wrong name);
* a ``.csv`` file that is really Parquet (it starts with the ``PAR1`` magic);
* a CSV file that is not UTF-8 (e.g. Latin-1 from a spreadsheet export);
* a CSV file separated by ``;``, tab or ``|`` (the header reads as one column).
"""

from __future__ import annotations

import codecs
from pathlib import Path

_PARQUET_MAGIC = b"PAR1"
_HEAD = 4096


def _head(path: Path) -> bytes:
    """The first bytes of the file (empty if it cannot be opened)."""
    try:
        with path.open("rb") as handle:
            return handle.read(_HEAD)
    except OSError:
        return b""


def _is_text(head: bytes) -> bool:
    """True if ``head`` decodes as UTF-8 (a multi-byte character cut at the end is fine)."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(head) - 4
    return True


def _first_non_utf8(path: Path) -> tuple[int, int] | None:
    """``(line, byte)`` of the first byte of ``path`` that is not valid UTF-8, or None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    # exc.object is the bytes held over from the last chunk plus this chunk
                    offset = exc.start - (len(exc.object) - len(chunk))
                    if offset < 0:
                        return line, exc.object[exc.start]
                    return line + chunk[:offset].count(b"\n"), chunk[offset]
                line += chunk.count(b"\n")
    except OSError:
        return None
    return None


def diagnose_unreadable(path: Path, fmt: str, exc: Exception) -> tuple[str, str] | None:
    """``(problem, fix)`` for a known reason why ``path`` failed to parse as ``fmt``, or None."""
    head = _head(path)
    if fmt == "parquet" and head and not head.startswith(_PARQUET_MAGIC) and _is_text(head):
        return (
            "cannot read the file as parquet: it has no 'PAR1' magic bytes and looks like "
            "text, e.g. CSV",
            'rename it to .csv or set format = "csv" in the party config, or write it with '
            "DataFrame.to_parquet",
        )
    if fmt == "csv" and head.startswith(_PARQUET_MAGIC):
        return (
            "cannot read the file as csv: it is a Parquet file (it starts with 'PAR1')",
            'rename it to .parquet or set format = "parquet" in the party config',
        )
    bad = _first_non_utf8(path) if fmt == "csv" and isinstance(exc, UnicodeDecodeError) else None
    if bad is not None:
        line, byte = bad
        return (
            f"cannot read the file as csv: it is not UTF-8 text (byte 0x{byte:02x} on line {line})",
            "save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet, or iconv -f latin1 -t utf-8)",
        )
    return None


def other_separator(header: list[str]) -> str | None:
    """The separator a one-column CSV header seems to use instead of ',' (or None)."""
    if len(header) != 1:
        return None
    return next((sep for sep in (";", "\t", "|") if sep in header[0]), None)
