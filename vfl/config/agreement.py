"""The job config fields both parties must hold identically, flattened for a handshake.

Each party reads its own copy of ``job.toml``. Before PSI both send :func:`job_fields` of their
copy to the other and compare them field by field (for example with
:func:`vfl.protocol.secure_layer.check_agreement`), so that a mismatch stops the job naming
the dotted key and both values, e.g. ``train.users_per_step: shop has 32, payments has 16``.
The same dict is the ``params`` of a :class:`vfl.checkpoint.CheckpointStore`, so a checkpoint
written under another config is refused on resume.

Left out: ``[parties]`` (each side's own file paths) and the keys in :data:`LOCAL_FIELDS`,
which only E acts on and may override on its command line.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel

from vfl.config.job import JobConfig

LOCAL_FIELDS = frozenset({"parties", "train.epochs", "train.patience", "train.time_budget_s"})
FieldValue = str | int | float | bool | list[Any] | None


def job_fields(job: JobConfig, *, exclude: frozenset[str] = LOCAL_FIELDS) -> dict[str, FieldValue]:
    """``{"section.key": value}`` of every job setting the two parties must share.

    Values are JSON-ready (tuples become lists, enums their value), so the dict survives a
    round trip through the wire unchanged and compares equal to the sender's.
    """
    return {k: v for k, v in _flatten(job, "").items() if not _excluded(k, exclude)}


def _flatten(model: BaseModel, prefix: str) -> dict[str, FieldValue]:
    """Dotted keys of a (nested) config model."""
    out: dict[str, FieldValue] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out.update(_flatten(value, f"{key}."))
        else:
            out[key] = _plain(value)
    return out


def _plain(value: object) -> FieldValue:
    """A JSON-ready form of a config value."""
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _excluded(key: str, exclude: frozenset[str]) -> bool:
    """True if ``key`` or one of its sections is in ``exclude``."""
    parts = key.split(".")
    return any(".".join(parts[: i + 1]) in exclude for i in range(len(parts)))
