"""Coordinator config: where C listens, which job it serves, which parties it admits.

Example::

    [coordinator]
    bind = "127.0.0.1:50051"
    job = "synthetic-pilot"
    parties = ["shop", "payments"]   # certificate common names allowed in this job
    active = "shop"                  # E; required with three or more parties (see below)
    ca = "certs/ca.pem"
    cert = "certs/coordinator.pem"
    key = "certs/coordinator.key"
    plan = "job.toml"                # the job plan handed to each party (its [parties] is ignored)
    capture = "relay.capture"        # optional audit copy of every relayed frame
    state = "synthetic-pilot.coordinator-state.json"   # optional; this is the default

Paths are relative to the config file's directory and are absolute in the loaded model. The
coordinator holds no data: only the job name, the party identities and its own TLS files.

``active`` names E, the party that every passive party works with. The relay then keeps the
passive parties apart: each sees and reaches only E and itself (its join, heartbeat and
status replies name no other partner, and a frame to another partner is refused as one to a
name outside the job). It is required with three or more parties and optional with two.

``state`` is the small JSON file in which the coordinator records which parties finished the
job (:mod:`vfl.transport.board_state`), so a coordinator restarted with the same command
still knows it. Its default, ``<job>.coordinator-state.json`` next to the config file
(characters other than letters, digits, ``.``, ``_`` and ``-`` in the job name become ``_``),
needs no flag to resume; delete the file to start the job's board afresh.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from vfl.config.party import BindAddress
from vfl.config.plan import JobPlan, load_plan_file
from vfl.config.toml_io import ConfigPath, load_toml_model, read_pem_files, rule_error
from vfl.errors import ConfigError

_FROZEN = ConfigDict(extra="forbid", frozen=True)


def _resolve_output(value: Path, info: ValidationInfo) -> Path:
    """Resolve a file the coordinator writes against the config file's directory."""
    context = info.context if isinstance(info.context, dict) else {}
    base = context.get("base_dir")
    return value if base is None else (Path(base) / value.expanduser()).resolve()


OutputPath = Annotated[Path, AfterValidator(_resolve_output)]


class CoordinatorSection(BaseModel):
    """``[coordinator]``: listen address, job id, admitted parties and TLS files."""

    model_config = _FROZEN

    bind: BindAddress = "127.0.0.1:50051"
    job: str = Field(min_length=1)
    parties: tuple[str, ...] = Field(min_length=2)
    active: str | None = None
    ca: ConfigPath
    cert: ConfigPath
    key: ConfigPath
    plan: ConfigPath | None = None
    capture: OutputPath | None = None
    state: OutputPath | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_state(cls, data: Any) -> Any:
        """``state`` defaults to ``<job>.coordinator-state.json`` beside the config file."""
        if isinstance(data, dict) and "state" not in data and isinstance(data.get("job"), str):
            return {**data, "state": default_state_name(data["job"])}
        return data

    @model_validator(mode="after")
    def _parties_distinct(self) -> CoordinatorSection:
        """Each party name once, none empty."""
        if any(not p.strip() for p in self.parties):
            raise rule_error(
                "a party name is empty",
                'list the certificate common names, e.g. parties = ["shop", "payments"]',
                "parties",
            )
        repeated = [p for p, n in Counter(self.parties).items() if n > 1]
        if repeated:
            raise rule_error(
                f"party '{repeated[0]}' is listed twice", "list each party once", "parties"
            )
        if self.active is not None and self.active not in self.parties:
            raise rule_error(
                f"active party '{self.active}' is not in parties {list(self.parties)}",
                "set active to E's name as listed in parties",
                "active",
            )
        if self.active is None and len(self.parties) > 2:
            raise rule_error(
                f"{len(self.parties)} parties and no active party",
                f'name E, which every passive party works with, e.g. active = "{self.parties[0]}"',
                "active",
            )
        return self


def default_state_name(job: str) -> str:
    """The default state file name of ``job``: its name made file-safe, then a fixed suffix."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", job) + ".coordinator-state.json"


class CoordinatorConfig(BaseModel):
    """A whole coordinator config file."""

    model_config = _FROZEN

    coordinator: CoordinatorSection

    def read_pems(self) -> tuple[bytes, bytes, bytes]:
        """``(ca_pem, cert_pem, key_pem)`` read from the configured files.

        Raises:
            VflError: a file vanished or became unreadable after the config was loaded.
        """
        section = self.coordinator
        return read_pem_files("coordinator", section.ca, section.cert, section.key)

    def read_plan(self, file: str | Path) -> JobPlan | None:
        """The job plan named by ``plan`` (None without one); its job name must be ``job``.

        Raises:
            ConfigError: the plan file is invalid, or names another job (``file`` is this
                coordinator config, named in the message).
        """
        section = self.coordinator
        if section.plan is None:
            return None
        plan = load_plan_file(section.plan)
        if plan.job.name != section.job:
            raise ConfigError(
                str(file),
                "coordinator.plan",
                f"{section.plan} is job '{plan.job.name}', this coordinator serves '{section.job}'",
                "set [job] name in the plan file to the coordinator's job, or vice versa",
            )
        return plan


def load_coordinator_config(path: str | Path) -> CoordinatorConfig:
    """Read and validate a coordinator config TOML file.

    Raises:
        ConfigError: unreadable/invalid TOML, unknown key, wrong type, missing key or section,
            missing certificate file, malformed bind address, empty or repeated party names.
    """
    return load_toml_model(CoordinatorConfig, path)
