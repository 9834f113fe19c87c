"""Alignment of the two parties' user tables on their common ids.

In the federated job the intersection comes out of PSI and is ordered by the doubly-blinded
value; here, for one-process experiments where both tables are loaded side by side, the
intersection is computed directly and ordered by id. Either way both sides end up with the same
ordered list and an index into their own table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vfl.errors import DataError


@dataclass(frozen=True)
class Alignment:
    """Common users in agreed order; ``active_rows[i]`` and ``passive_rows[i]`` are user ``i``."""

    ids: np.ndarray  # (n,) str
    active_rows: np.ndarray  # (n,) int64 rows of E's user table
    passive_rows: np.ndarray  # (n,) int64 rows of P's user table

    def __len__(self) -> int:
        return len(self.ids)


def align_locally(
    active_ids: np.ndarray,
    passive_ids: np.ndarray,
    *,
    sources: tuple[str, str] = ("E's users table", "P's users table"),
) -> Alignment:
    """Intersect two unique id arrays and order the result by id.

    ``sources`` name the two id sets in the error (e.g. their file paths).

    Raises:
        DataError: if the intersection is empty.
    """
    common, a_rows, p_rows = np.intersect1d(
        active_ids.astype(str), passive_ids.astype(str), assume_unique=True, return_indices=True
    )
    if common.size == 0:
        raise DataError(
            f"{sources[0]} and {sources[1]}",
            None,
            f"the two parties have no user id in common (empty intersection of "
            f"{active_ids.size} and {passive_ids.size} ids, e.g. {active_ids[:1].tolist()} "
            f"and {passive_ids[:1].tolist()})",
            "check both parties' [ids] normalisation rules (strip, case) and id columns",
        )
    return Alignment(
        ids=common, active_rows=a_rows.astype(np.int64), passive_rows=p_rows.astype(np.int64)
    )
