"""Checkpoints of one party's job state, so that a killed process resumes where it stopped.

One file per (phase, step) in ``<work dir>/checkpoints/``, named
``<phase order>-<phase>-<step>.vflckpt`` and written atomically (:mod:`vfl.storage`), so a kill
at any moment leaves either the previous set of files or the new one. File layout::

    b"VFLCKPT" + version byte
    8-byte big-endian header length, header JSON (job, party, phase, step, seq, params, meta,
        and the name, kind and length of each section)
    sections: numeric arrays as .npy (no pickle), big-integer arrays (Paillier shares) as JSON
        decimal strings, raw byte blobs (e.g. serialised ciphertexts or model state)
    SHA-256 of everything above (32 bytes)

Loading refuses, with a :class:`~vfl.errors.CheckpointError` naming the file and the fix, a
file whose digest does not match (corrupted or truncated), of a newer format, of another job
or party, or written under different agreed parameters (``params``, e.g. the job plan's
fields, :meth:`vfl.config.plan.JobPlan.fields`).

Resuming with two parties (see :func:`agree_resume`): each announces its latest
``(phase, step)``; both restart from the older of the two, which the one ahead still holds as
long as every phase keeps at least two checkpoints (``keep >= 2``). A training step's update to
the shares ``U`` and ``V`` is thus applied by both parties or by neither.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vfl.errors import CheckpointError, field_differences
from vfl.phases import CHECKPOINTED, Phase
from vfl.storage import atomic_write_bytes, ensure_dir, remove_stale_temporaries

VERSION = 1
_MAGIC = b"VFLCKPT"
_DIGEST = 32
_SUFFIX = ".vflckpt"
_NAME = re.compile(r"^(\d{2})-([a-z]+)-(\d{10})\.vflckpt$")
Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Checkpoint:
    """One party's state after ``step`` of ``phase``; ``seq`` is the last message number."""

    job_id: str
    party: str
    phase: Phase
    step: int
    seq: int = 0
    params: dict[str, Scalar] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def position(self) -> tuple[int, int]:
        """``(phase order, step)``: checkpoints compare by this."""
        return self.phase.order, self.step


def file_name(phase: Phase, step: int) -> str:
    """The checkpoint file name of ``(phase, step)``; ``step`` in ``[0, 10^10)``."""
    if not 0 <= step < 10**10:
        raise ValueError(f"checkpoint step must be in [0, 10^10), got {step}")
    return f"{phase.order:02d}-{phase.value}-{step:010d}{_SUFFIX}"


# -- encoding --------------------------------------------------------------------------------


def _encode_array(array: np.ndarray) -> tuple[str, bytes]:
    """(kind, bytes) of an array: numeric as .npy, Python ints of any size as JSON."""
    if array.dtype == object:
        values = [str(int(v)) for v in array.ravel()]
        return "bigint", json.dumps({"shape": list(array.shape), "values": values}).encode()
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return "npy", buffer.getvalue()


def _decode_array(kind: str, data: bytes) -> np.ndarray:
    """Inverse of :func:`_encode_array`."""
    if kind == "bigint":
        doc = json.loads(data)
        flat = [int(v) for v in doc["values"]]
        return np.array(flat, dtype=object).reshape(tuple(doc["shape"]))
    return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))


def encode(checkpoint: Checkpoint) -> bytes:
    """The file content of ``checkpoint`` (layout in the module docstring)."""
    sections: list[tuple[str, str, bytes]] = [
        (name, *_encode_array(np.asarray(a))) for name, a in sorted(checkpoint.arrays.items())
    ]
    sections += [(name, "blob", bytes(b)) for name, b in sorted(checkpoint.blobs.items())]
    header = {
        "job_id": checkpoint.job_id,
        "party": checkpoint.party,
        "phase": checkpoint.phase.value,
        "step": checkpoint.step,
        "seq": checkpoint.seq,
        "params": checkpoint.params,
        "meta": checkpoint.meta,
        "sections": [{"name": n, "kind": k, "length": len(d)} for n, k, d in sections],
    }
    head = json.dumps(header, sort_keys=True).encode()
    body = _MAGIC + bytes([VERSION]) + struct.pack(">Q", len(head)) + head
    body += b"".join(d for _, _, d in sections)
    return body + hashlib.sha256(body).digest()


def decode(data: bytes, source: str) -> Checkpoint:
    """Parse a checkpoint file's content; ``source`` names it in errors.

    Raises:
        CheckpointError: bad magic, digest mismatch (corrupted or truncated), newer version.
    """
    start = len(_MAGIC) + 1 + 8
    if len(data) < start + _DIGEST or not data.startswith(_MAGIC):
        raise _corrupted(source, "too short or not a vfl checkpoint")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise _corrupted(source, "its SHA-256 digest does not match (corrupted or truncated)")
    version = body[len(_MAGIC)]
    if version > VERSION:
        raise CheckpointError(
            f"{source}: checkpoint format version {version} is newer than this vfl's "
            f"{VERSION}. Fix: resume with the vfl version that wrote it"
        )
    (head_len,) = struct.unpack(">Q", body[len(_MAGIC) + 1 : start])
    header = json.loads(body[start : start + head_len])
    arrays, blobs = _sections(body, header["sections"], start + head_len)
    return Checkpoint(
        job_id=header["job_id"],
        party=header["party"],
        phase=Phase(header["phase"]),
        step=int(header["step"]),
        seq=int(header["seq"]),
        params=header["params"],
        meta=header["meta"],
        arrays=arrays,
        blobs=blobs,
    )


def _sections(
    body: bytes, sections: list[dict[str, Any]], offset: int
) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
    """The arrays and blobs stored from ``offset`` on, as the header's section list says."""
    arrays: dict[str, np.ndarray] = {}
    blobs: dict[str, bytes] = {}
    for section in sections:
        chunk = body[offset : offset + section["length"]]
        offset += section["length"]
        if section["kind"] == "blob":
            blobs[section["name"]] = chunk
        else:
            arrays[section["name"]] = _decode_array(section["kind"], chunk)
    return arrays, blobs


def _corrupted(source: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: checkpoint is unusable: {why}. Fix: delete this file to resume from the "
        "previous checkpoint, or start the job again in a fresh work directory"
    )


# -- the store -------------------------------------------------------------------------------


class CheckpointStore:
    """The checkpoints of one party for one job, in ``work_dir/checkpoints``.

    ``params`` are the agreed parameters the state depends on (job config fields, key size,
    ...): a checkpoint written under other values is refused, naming each differing field.
    ``keep`` checkpoints are kept per phase (at least 2, so a party one step ahead of its peer
    can step back).
    """

    def __init__(
        self,
        work_dir: str | Path,
        *,
        job_id: str,
        party: str,
        params: dict[str, Scalar] | None = None,
        keep: int = 2,
    ) -> None:
        if keep < 2:
            raise ValueError("keep at least 2 checkpoints per phase (see agree_resume)")
        self.directory = Path(work_dir) / "checkpoints"
        self.job_id, self.party, self.keep = job_id, party, keep
        self.params: dict[str, Scalar] = dict(params or {})

    def save(
        self,
        phase: Phase,
        step: int,
        *,
        seq: int = 0,
        meta: dict[str, Any] | None = None,
        arrays: dict[str, np.ndarray] | None = None,
        blobs: dict[str, bytes] | None = None,
    ) -> Path:
        """Write the checkpoint of ``(phase, step)`` atomically and prune old ones; return it.

        Saving the same ``(phase, step)`` again replaces it (a re-run step after a resume).

        Raises:
            StorageError: disk full or directory not writable (older checkpoints stay intact).
            TypeError: ``meta`` is not JSON-serialisable.
        """
        checkpoint = Checkpoint(
            self.job_id,
            self.party,
            phase,
            step,
            seq,
            self.params,
            meta or {},
            arrays or {},
            blobs or {},
        )
        ensure_dir(self.directory, private=True)  # secrets: shares, weights, masks (0600/0700)
        path = atomic_write_bytes(
            self.directory / file_name(phase, step), encode(checkpoint), private=True
        )
        self._prune(phase)
        return path

    def positions(self) -> list[tuple[Phase, int]]:
        """Every ``(phase, step)`` on disk, oldest first (temporary files are ignored)."""
        found = []
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                match = _NAME.match(path.name)
                if match and match.group(2) in {p.value for p in CHECKPOINTED}:
                    found.append((Phase(match.group(2)), int(match.group(3))))
        return sorted(found, key=lambda ps: (ps[0].order, ps[1]))

    def load(self, phase: Phase, step: int) -> Checkpoint:
        """The checkpoint of ``(phase, step)``, checked against this job, party and params.

        Raises:
            CheckpointError: missing, corrupted, newer format, or of another job/party/params.
        """
        path = self.directory / file_name(phase, step)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise CheckpointError(
                f"{path}: no checkpoint of {phase.value} step {step}. Fix: the peer expects to "
                "resume there; restore the file or restart both parties in fresh work "
                "directories"
            ) from exc
        checkpoint = decode(data, str(path))
        self._check_owner(checkpoint, path)
        return checkpoint

    def latest(self, phase: Phase | None = None) -> Checkpoint | None:
        """The newest checkpoint (of ``phase`` if given), or None if there is none.

        Stray temporary files of a killed writer are removed first.

        Raises:
            CheckpointError: the newest file is corrupted or belongs to another job/party.
        """
        if self.directory.is_dir():
            remove_stale_temporaries(self.directory)
        candidates = [ps for ps in self.positions() if phase is None or ps[0] is phase]
        return self.load(*candidates[-1]) if candidates else None

    def discard_after(self, position: tuple[Phase, int] | None) -> list[tuple[Phase, int]]:
        """Delete every checkpoint newer than ``position`` (None: all); return what went.

        After both parties agreed to resume from ``position``, the one that was ahead drops
        the state the other never reached, so a later restart cannot pick it up.
        """

        def newer(ps: tuple[Phase, int]) -> bool:
            return position is None or (ps[0].order, ps[1]) > (position[0].order, position[1])

        gone = [ps for ps in self.positions() if newer(ps)]
        for phase, step in gone:
            (self.directory / file_name(phase, step)).unlink(missing_ok=True)
        return gone

    def _check_owner(self, checkpoint: Checkpoint, path: Path) -> None:
        """Refuse a checkpoint of another job, party or set of agreed parameters."""
        if (checkpoint.job_id, checkpoint.party) != (self.job_id, self.party):
            raise CheckpointError(
                f"{path}: checkpoint of job '{checkpoint.job_id}', party '{checkpoint.party}', "
                f"but this is job '{self.job_id}', party '{self.party}'. Fix: give this job its "
                f"own work directory (--out), or delete {self.directory} to start over"
            )
        diff = field_differences(checkpoint.params, self.params, me="checkpoint", peer="this run")
        if diff:
            raise CheckpointError(
                f"{path}: written under other parameters -- {'; '.join(diff)}. Fix: resume "
                f"with the job config it was written with, or delete {self.directory} to start "
                "over"
            )

    def _prune(self, phase: Phase) -> None:
        """Delete all but the newest ``keep`` checkpoints of ``phase``."""
        steps = [s for p, s in self.positions() if p is phase]
        for step in steps[: -self.keep]:
            (self.directory / file_name(phase, step)).unlink(missing_ok=True)


def agree_resume(
    mine: tuple[Phase, int] | None, theirs: tuple[Phase, int] | None, *, me: str, peer: str
) -> tuple[Phase, int] | None:
    """Where both parties resume: the older of their two latest positions (None: from scratch).

    The one ahead reloads the older position (it keeps ``keep >= 2`` per phase). Within a
    phase the two may differ by one step only: one party saved step ``s``, the other was killed
    before it did. If one party has no checkpoint, both start over while nothing past
    alignment exists; later, the missing side has lost its shares and the job cannot resume.

    Raises:
        CheckpointError: the positions cannot be reconciled; names both parties' positions.
    """
    if mine is None and theirs is None:
        return None
    if mine is None or theirs is None:
        present = mine if mine is not None else theirs
        if present is not None and present[0] in (Phase.PSI, Phase.ALIGNMENT):
            return None
        raise _unreconciled(mine, theirs, me, peer)
    older, newer = sorted((mine, theirs), key=lambda ps: (ps[0].order, ps[1]))
    if older[0] is newer[0] and newer[1] - older[1] > 1:
        raise _unreconciled(mine, theirs, me, peer)
    return older


def _unreconciled(
    mine: tuple[Phase, int] | None, theirs: tuple[Phase, int] | None, me: str, peer: str
) -> CheckpointError:
    return CheckpointError(
        f"cannot resume: {me} is at {_show(mine)}, {peer} at {_show(theirs)}. Fix: restore "
        "the missing checkpoints, or restart both parties with fresh work directories"
    )


def _show(position: tuple[Phase, int] | None) -> str:
    return "no checkpoint" if position is None else f"{position[0].value} step {position[1]}"
