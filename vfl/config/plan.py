"""The job plan: the part of a job config both parties must run with, handed out by C.

A job file (:mod:`vfl.config.job`) also names the two party config files in ``[parties]``;
those are local paths of whoever wrote it and no business of the other side. The plan is
everything else -- ``[job]`` (name, seed), ``[model]``, ``[train]``, ``[eval]``, ``[psi]``,
``[privacy]`` -- and travels as canonical JSON. Its SHA-256 fingerprint over that JSON is what
the parties compare at the handshake, with the fields
listed one by one so a mismatch names the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from vfl.config.job import (
    EvalConfig,
    JobConfig,
    JobSection,
    ModelConfig,
    PrivacyConfig,
    PsiConfig,
    TrainConfig,
)
from vfl.config.toml_io import read_toml, validate_config

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class JobPlan(BaseModel):
    """``[job]``, ``[model]``, ``[train]``, ``[eval]``, ``[psi]``, ``[privacy]``; no local paths."""

    model_config = _FROZEN

    job: JobSection = JobSection()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    psi: PsiConfig = PsiConfig()
    privacy: PrivacyConfig = PrivacyConfig()

    @classmethod
    def of(cls, job: JobConfig) -> JobPlan:
        """The plan part of a loaded job config."""
        return cls(
            job=job.job,
            model=job.model,
            train=job.train,
            eval=job.eval,
            psi=job.psi,
            privacy=job.privacy,
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the bytes the fingerprint covers."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, source: str) -> JobPlan:
        """Parse and validate a plan received from ``source``.

        Raises:
            ConfigError: not JSON, or a field is unknown, of the wrong type or out of range
                (named with ``source`` as the file).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            data = {"job": f"<not JSON: {exc}>"}
        return validate_config(cls, data if isinstance(data, dict) else {}, source)

    def fingerprint(self) -> str:
        """SHA-256 hex of :meth:`to_json`."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def fields(self) -> dict[str, Any]:
        """Every plan value under its dotted name, e.g. ``train.key_bits``."""
        out: dict[str, Any] = {}
        for section, values in self.model_dump(mode="json").items():
            for key, value in values.items():
                out[f"{section}.{key}"] = value
        return out


def load_plan_file(path: str | Path) -> JobPlan:
    """Read the plan part of a job TOML file, ignoring its ``[parties]`` section.

    Raises:
        ConfigError: unreadable or invalid TOML, unknown key, wrong type or range.
    """
    data = read_toml(path)
    data.pop("parties", None)
    return validate_config(JobPlan, data, path)
