"""Persisting one party's PSI alignment in its own work directory, and reusing it safely.

The file (``alignment.json``) holds the aligned ids and rows plus two digests:

- ``input_digest = SHA-256(version, curve, job_id, id rule, n, len||utf8(id) for each
  normalised id in table order)`` -- this side's inputs. A changed id, order, rule, curve or
  job gives a different digest, and the file is not reused.
- ``alignment_digest = SHA-256(the doubly-blinded values of the intersection, sorted)`` --
  identical on both sides after a run, because both hold the same values ``a·b·H(id)``.

Reuse needs both sides to agree, or one side would align on an old intersection while the
other recomputes with fresh scalars. So in the PSI hello each side offers the alignment digest
of its file if its own input digest still matches (else ``""``); both reuse exactly when the
two offers are equal and non-empty, and otherwise both recompute and overwrite their files.
The digest reveals nothing new: the peer computed the same value in that earlier run. What a
side learns is one bit: whether the peer's input is unchanged since their last common run.

Files are written atomically (a temporary file in the same directory, then ``os.replace``), so
a crash leaves either the old or the new alignment, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from vfl.config.job import PsiCurve
from vfl.config.party import IdRule
from vfl.storage import atomic_path

ALIGNMENT_FILE = "alignment.json"
_FORMAT = 1
_WRITE_BATCH = 65536


@dataclass(frozen=True)
class StoredAlignment:
    """One side's aligned intersection as persisted: ``rows[k]`` holds id ``ids[k]``."""

    input_digest: str
    alignment_digest: str
    ids: list[str]
    rows: npt.NDArray[np.int64]
    n_local: int
    n_remote: int


def input_digest(
    normalised: Sequence[str], *, version: int, curve: PsiCurve, job_id: str, rule: IdRule
) -> str:
    """Hex SHA-256 over the PSI parameters and every normalised id, length-prefixed, in order."""
    h = hashlib.sha256()
    header = json.dumps(
        [version, curve.value, job_id, rule.fingerprint(), len(normalised)], sort_keys=True
    )
    h.update(header.encode())
    for value in normalised:
        data = value.encode("utf-8")
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()


def alignment_digest(sorted_doubles: bytes | npt.NDArray[np.bytes_]) -> str:
    """Hex SHA-256 of the concatenated, sorted doubly-blinded values of the intersection
    (``bytes``, or a C-contiguous array of them, hashed without a copy)."""
    data = sorted_doubles if isinstance(sorted_doubles, bytes) else sorted_doubles.data
    return hashlib.sha256(data).hexdigest()


def load_alignment(directory: Path, expected_input: str) -> StoredAlignment | None:
    """The stored alignment if ``directory`` holds one for ``expected_input``, else ``None``.

    A missing, unreadable, malformed or stale file is not an error: it is recomputed.
    """
    path = directory / ALIGNMENT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return None
    if data.get("input_digest") != expected_input:
        return None
    try:
        ids, rows = [str(i) for i in data["ids"]], np.asarray(data["rows"], dtype=np.int64)
        stored = StoredAlignment(
            input_digest=str(data["input_digest"]),
            alignment_digest=str(data["alignment_digest"]),
            ids=ids,
            rows=rows,
            n_local=int(data["n_local"]),
            n_remote=int(data["n_remote"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return stored if len(ids) == len(rows) and stored.alignment_digest else None


def save_alignment(directory: Path, stored: StoredAlignment) -> Path:
    """Write ``stored`` to ``directory/alignment.json`` atomically and return the path.

    The JSON is written a batch of ids at a time, so writing costs memory for one batch,
    not a second copy of the intersection (as one ``json.dumps`` of it would).

    Raises:
        StorageError: if the directory cannot be created or written (an ``OSError``).
    """
    path = directory / ALIGNMENT_FILE
    head = {
        "format": _FORMAT,
        "input_digest": stored.input_digest,
        "alignment_digest": stored.alignment_digest,
        "n_local": stored.n_local,
        "n_remote": stored.n_remote,
        "n_common": len(stored.ids),
    }
    # the ids are a secret of both parties: 0600 in a 0700 directory, whatever the umask
    with atomic_path(path, private=True) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write(json.dumps(head)[:-1] + ', "ids": ')
        _write_list(out, stored.ids)
        out.write(', "rows": ')
        _write_list(out, stored.rows)
        out.write("}")
    return path


def _write_list(out: TextIO, values: Sequence[str] | npt.NDArray[np.int64]) -> None:
    """Write ``values`` as one JSON array, :data:`_WRITE_BATCH` elements at a time."""
    out.write("[")
    for start in range(0, len(values), _WRITE_BATCH):
        batch = values[start : start + _WRITE_BATCH]
        items = batch.tolist() if isinstance(batch, np.ndarray) else list(batch)
        out.write(("" if start == 0 else ", ") + json.dumps(items)[1:-1])
    out.write("]")
