"""E's cache of ``z_B = b·W_B`` for every user P knows, written by a refresh (SPEC §2 step 7).

The cache lives next to E's shard, in ``<model>/../serving/`` (0700), as two 0600 files
written atomically: ``zb.npy`` (n_aligned x h float64, row j = aligned position j of the
shard) and ``zb.json`` (when it was refreshed, the shard digest and plan fingerprint it
belongs to, its shape and the SHA-256 of ``zb.npy``). A cache of another shard, a changed
file or a shape that does not fit is refused with a :class:`~vfl.errors.ShardError`; a
missing cache is simply absent (the service then needs a refresh before the VFL path).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vfl.errors import ShardError
from vfl.party.export import Shard
from vfl.storage import atomic_write_bytes, atomic_write_json, ensure_dir

ARRAY, META = "zb.npy", "zb.json"


def cache_dir(shard: Shard) -> Path:
    """Where the cache of ``shard`` lives: ``serving/`` next to the shard's directory."""
    return shard.path.parent / "serving"


@dataclass(frozen=True)
class ZbCache:
    """Every aligned user's ``z_B`` (row j = aligned position j) and when it was refreshed."""

    z_b: np.ndarray
    refreshed_at: float  # time.time() at the end of the refresh
    shard: str  # the E shard's digest

    def age_s(self) -> float:
        """Seconds since the refresh."""
        return max(0.0, time.time() - self.refreshed_at)

    def save(self, directory: Path, plan_fingerprint: str) -> None:
        """Write both files (0600, atomically; the array first, so a crash keeps the old pair
        refused rather than mixed: the metadata names the array's digest)."""
        ensure_dir(directory, private=True)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(self.z_b, np.float64), allow_pickle=False)
        data = buffer.getvalue()
        atomic_write_bytes(directory / ARRAY, data, private=True)
        meta = {
            "refreshed_at": self.refreshed_at,
            "shard_sha256": self.shard,
            "plan_fingerprint": plan_fingerprint,
            "shape": list(self.z_b.shape),
            "zb_sha256": hashlib.sha256(data).hexdigest(),
        }
        atomic_write_json(directory / META, meta, private=True)


def load_cache(shard: Shard, n_aligned: int) -> ZbCache | None:
    """The cache of ``shard``, or None if no refresh has written one.

    Raises:
        ShardError: the cache belongs to another shard or plan, was changed, or does not
            have one row per aligned user (names the file and the fix).
    """
    directory = cache_dir(shard)
    if not (directory / META).is_file():
        return None
    fix = f"Fix: delete {directory} and refresh (POST /refresh, or restart `vfl serve`)"
    try:
        meta = json.loads((directory / META).read_text())
        data = (directory / ARRAY).read_bytes()
    except (OSError, ValueError) as exc:
        raise ShardError(f"{directory / META}: unreadable z_B cache ({exc}). {fix}") from exc
    if meta.get("shard_sha256") != shard.digest:
        raise ShardError(f"{directory / META}: z_B cache of another shard. {fix}")
    if meta.get("plan_fingerprint") != shard.manifest["plan_fingerprint"]:
        raise ShardError(f"{directory / META}: z_B cache of another plan. {fix}")
    if hashlib.sha256(data).hexdigest() != meta.get("zb_sha256"):
        raise ShardError(f"{directory / ARRAY}: changed since its refresh. {fix}")
    z_b = np.load(io.BytesIO(data), allow_pickle=False)
    if z_b.ndim != 2 or z_b.shape[0] != n_aligned:
        raise ShardError(
            f"{directory / ARRAY}: {z_b.shape[0]} rows for {n_aligned} aligned users. {fix}"
        )
    return ZbCache(z_b=z_b, refreshed_at=float(meta["refreshed_at"]), shard=shard.digest)
