"""A party's normalised ids held compactly: one UTF-8 buffer and an offset per id.

A list of ``n`` Python strings costs about ``57 + len`` bytes per ASCII id (object header,
hash, pointer in the list); :class:`IdColumn` holds the same ids in ``len + 8`` bytes
(the UTF-8 bytes, back to back, and one ``int64`` end offset each), so 10M ids of 14
characters take about 220 MB instead of about 710 MB. It is a read-only
``Sequence[str]``: ``column[k]`` decodes one id, iteration decodes chunk by chunk, and
:meth:`IdColumn.take` decodes the ids of a chunk of row numbers for one executor call.

:func:`normalise_column` builds it from any iterable of raw ids (a list, or a generator
reading a user file), normalising chunk by chunk, so the raw ids need never be held at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import overload

import numpy as np
import numpy.typing as npt

from vfl.errors import DataError

_EXAMPLES = 3
_BATCH = 4096  # ids decoded or encoded per pass of a loop


class IdColumn(Sequence[str]):
    """``n`` ids as one UTF-8 buffer; id ``k`` is ``data[ends[k-1] : ends[k]]`` (``ends[-1]``
    before the first is 0). Build with :meth:`from_strings` or :func:`normalise_column`."""

    def __init__(self, data: bytes | bytearray, ends: npt.NDArray[np.int64]) -> None:
        self._data = data
        self._starts = np.concatenate([np.zeros(1, np.int64), ends])
        if self._starts.size > 1 and int(self._starts[-1]) != len(data):
            raise ValueError(f"id offsets end at {int(self._starts[-1])}, data has {len(data)}")

    @classmethod
    def from_strings(cls, ids: Iterable[str]) -> IdColumn:
        """The column of ``ids`` as given (no normalisation)."""
        builder = _Builder()
        source = iter(ids)
        while batch := list(islice(source, _BATCH)):
            builder.extend(batch)
        return builder.column()

    def __len__(self) -> int:
        return int(self._starts.size - 1)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        """Id ``index`` (negative counts from the end), or the ids of a slice as a list.

        Raises:
            IndexError: ``index`` out of range.
        """
        if isinstance(index, slice):
            return self.take(np.arange(len(self), dtype=np.int64)[index])
        n = len(self)
        k = index + n if index < 0 else index
        if not 0 <= k < n:
            raise IndexError(f"id {index} out of range for {n} ids")
        start, end = int(self._starts[k]), int(self._starts[k + 1])
        return self._data[start:end].decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        for first in range(0, len(self), _BATCH):
            yield from self.take(np.arange(first, min(first + _BATCH, len(self))))

    def take(self, rows: npt.NDArray[np.int64]) -> list[str]:
        """``[self[k] for k in rows]`` for rows in ``[0, len)``, decoded in one pass."""
        data = self._data
        starts, ends = self._starts[rows].tolist(), self._starts[rows + 1].tolist()
        return [data[s:e].decode("utf-8") for s, e in zip(starts, ends, strict=True)]

    @property
    def nbytes(self) -> int:
        """Bytes held: the UTF-8 buffer plus the offsets."""
        return len(self._data) + int(self._starts.nbytes)


class _Builder:
    """Appends batches of ids to one growing buffer (amortised doubling, no per-id object)."""

    def __init__(self) -> None:
        self.data, self.ends, self.size = bytearray(), [np.zeros(0, np.int64)], 0

    def extend(self, batch: list[str]) -> None:
        """Append ``batch`` in order."""
        encoded = [value.encode("utf-8") for value in batch]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        self.ends.append(self.size + np.cumsum(lengths))
        self.data += b"".join(encoded)
        self.size = len(self.data)

    def column(self) -> IdColumn:
        """The column of everything appended."""
        return IdColumn(self.data, np.concatenate(self.ends))


def normalise_column(
    ids: Iterable[str], normalise: Callable[[str], str], *, party: str, batch: int = _BATCH
) -> IdColumn:
    """The column of ``[normalise(i) for i in ids]``, refusing empty results and duplicates.

    ``ids`` is read once, ``batch`` at a time (the only ids held as Python strings).

    Raises:
        DataError: naming ``party``, how many ids are empty or duplicated, and examples.
    """
    builder, n_empty, n = _Builder(), 0, 0
    hashes: list[npt.NDArray[np.int64]] = []
    empty: list[int] = []  # the first few empty rows, as examples
    source = iter(ids)
    while raw := list(islice(source, batch)):
        done = [normalise(value) for value in raw]
        blank = [n + i for i, value in enumerate(done) if not value]
        n_empty += len(blank)
        empty.extend(blank[: _EXAMPLES - len(empty)])
        hashes.append(np.fromiter(map(hash, done), dtype=np.int64, count=len(done)))
        builder.extend(done)
        n += len(done)
    if n_empty:
        raise DataError(
            f"ids of party '{party}'",
            None,
            f"{n_empty} of {n} ids are empty after normalisation (rows {empty})",
            "fill in or remove the rows with empty ids",
        )
    column = builder.column()
    _refuse_duplicates(column, np.concatenate(hashes) if hashes else np.zeros(0, np.int64), party)
    return column


def _refuse_duplicates(column: IdColumn, hashes: npt.NDArray[np.int64], party: str) -> None:
    """Raise if two ids of ``column`` are equal, in 16 bytes an id (sorted string hashes);
    ids are compared exactly only where hashes collide, so a hash collision is never taken
    for a duplicate.

    Raises:
        DataError: naming ``party``, the number of duplicated ids and of extra rows, examples.
    """
    ordered = np.sort(hashes)
    colliding = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if colliding.size == 0:
        return
    rows = np.flatnonzero(np.isin(hashes, colliding))
    counts: dict[str, int] = {}
    for value in column.take(rows):
        counts[value] = counts.get(value, 0) + 1
    dupes = [(value, k) for value, k in counts.items() if k > 1]
    if not dupes:
        return
    examples = ", ".join(f"'{value}' x{k}" for value, k in dupes[:_EXAMPLES])
    raise DataError(
        f"ids of party '{party}'",
        None,
        f"{len(dupes)} ids occur more than once after normalisation, "
        f"{sum(k for _, k in dupes) - len(dupes)} extra rows (e.g. {examples})",
        "deduplicate the user file, or check the [ids] normalisation rule",
    )
