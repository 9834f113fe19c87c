"""Write party data files plus the party and job config TOMLs that describe them.

Shared by the dataset makers (:mod:`vfl.data.synthetic`, :mod:`vfl.data.movielens`). The TOML
layout is the one read by :mod:`vfl.config.party`; every data path in a party TOML is relative to
that TOML file, so a generated directory can be moved as a whole.

Invariant: no feature column written here contains NaN (the loader rejects NaN); callers fill
missing values and add a flag column instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from vfl.data.formats import FileFormat as FileFormat
from vfl.data.formats import dumps_toml
from vfl.kinds import PartyKind, TableSchema
from vfl.storage import atomic_path, atomic_write_text

Role = Literal["active", "passive"]
IdCase = Literal["lower", "upper", "keep"]


@dataclass(frozen=True)
class EntityFile:
    """A per-entity feature table (users or items): file name, id column and feature columns."""

    path: str
    id_column: str
    numeric: Sequence[str] = ()
    categorical: Sequence[str] = ()


@dataclass(frozen=True)
class InteractionFile:
    """The active party's interaction log; ``label_column=None`` means every row is positive."""

    path: str
    user_column: str
    item_column: str
    time_column: str
    label_column: str | None = None


@dataclass(frozen=True)
class PartyFiles:
    """What one party config TOML says; ``items`` and ``interactions`` are for the active party."""

    name: str
    role: Role
    users: EntityFile
    items: EntityFile | None = None
    interactions: InteractionFile | None = None
    strip: bool = True
    case: IdCase = "lower"
    kind: str | None = None  # [party] kind (vfl.kinds); None: the role's default


def data_file_name(stem: str, fmt: FileFormat) -> str:
    """Return ``stem.csv`` or ``stem.parquet``."""
    return f"{stem}.{fmt.value}"


def write_table(df: pd.DataFrame, path: Path, fmt: FileFormat, *, features: Sequence[str]) -> Path:
    """Write ``df`` to ``path`` as CSV (no index) or Parquet and return the path.

    The write is atomic: a failure (disk full, ...) leaves any previous file intact.

    Raises:
        ValueError: if any column in ``features`` holds NaN or is missing from ``df``.
        StorageError: the directory cannot be created or written.
    """
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise ValueError(f"{path.name}: feature columns {missing} are not in the table")
    bad = [c for c in features if df[c].isna().any()]
    if bad:
        raise ValueError(f"{path.name}: feature columns {bad} hold NaN; fill them and add a flag")
    with atomic_path(path) as tmp:
        if fmt is FileFormat.PARQUET:
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    return path


def split_features(df: pd.DataFrame, id_column: str) -> tuple[list[str], list[str]]:
    """Return (numeric, categorical) feature columns of ``df``: numbers vs strings, id excluded."""
    cols = [c for c in df.columns if c != id_column]
    numeric = [c for c in cols if pd.api.types.is_numeric_dtype(df[c])]
    return numeric, [c for c in cols if c not in numeric]


def _entity_table(spec: EntityFile) -> dict[str, object]:
    """TOML entries of a ``[users]`` or ``[items]`` table."""
    return {
        "path": spec.path,
        "id_column": spec.id_column,
        "numeric": list(spec.numeric),
        "categorical": list(spec.categorical),
    }


def write_party_config(path: Path, party: PartyFiles) -> Path:
    """Write one party config TOML (``[party]``, ``[ids]``, ``[users]``, ...); return its path."""
    section: dict[str, object] = {"name": party.name, "role": party.role}
    if party.kind is not None:
        section["kind"] = party.kind
    tables: dict[str, dict[str, object]] = {
        "party": section,
        "ids": {"strip": party.strip, "case": party.case},
        "users": _entity_table(party.users),
    }
    if party.items is not None:
        tables["items"] = _entity_table(party.items)
    if party.interactions is not None:
        inter = party.interactions
        tables["interactions"] = {
            "path": inter.path,
            "user_column": inter.user_column,
            "item_column": inter.item_column,
            "time_column": inter.time_column,
            "label_column": inter.label_column,
        }
    atomic_write_text(path, dumps_toml(tables))
    return path


def write_job_config(
    path: Path,
    *,
    name: str,
    seed: int,
    active: str,
    passive: str,
    settings: dict[str, dict[str, object]] | None = None,
) -> Path:
    """Write ``job.toml`` naming the job, its seed and the two party TOMLs (relative paths).

    ``settings`` adds sections such as ``[model]`` and ``[train]`` tuned for the dataset.
    """
    tables: dict[str, dict[str, object]] = {
        "job": {"name": name, "seed": seed},
        "parties": {"active": active, "passive": passive},
        **(settings or {}),
    }
    atomic_write_text(path, dumps_toml(tables))
    return path


def read_table(path: Path, *, str_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a file written by :func:`write_table`; ``str_columns`` (ids) are kept as strings."""
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        return df.astype({c: str for c in str_columns})
    return pd.read_csv(path, dtype={c: str for c in str_columns}, keep_default_na=False)


def two_party_files(
    tables: dict[str, pd.DataFrame],
    fmt: FileFormat,
    *,
    names: tuple[str, str],
    label_column: str | None,
    kinds: tuple[PartyKind, PartyKind] | None = None,
) -> tuple[PartyFiles, PartyFiles]:
    """Configs of the standard layout: E holds ``e_users``, ``items`` and ``interactions``
    (``user_id``, ``item_id``, ``timestamp``), P holds ``p_users``. With ``kinds`` (E's, P's)
    the features are the kinds' schemas (:mod:`vfl.kinds`) and the configs name the kinds;
    without, they are split by dtype.

    Raises:
        ValueError: a table's columns are not those of its kind's schema.
    """
    path = {stem: data_file_name(stem, fmt) for stem in tables}
    e_kind, p_kind = kinds or (None, None)

    def entity(stem: str, id_column: str, schema: TableSchema | None) -> EntityFile:
        if schema is None:
            return EntityFile(path[stem], id_column, *split_features(tables[stem], id_column))
        _check_schema(stem, tables[stem], schema)
        return EntityFile(path[stem], schema.id_column, schema.numeric, schema.categorical)

    active = PartyFiles(
        name=names[0],
        role="active",
        users=entity("e_users", "user_id", None if e_kind is None else e_kind.users),
        items=entity("items", "item_id", None if e_kind is None else e_kind.items),
        interactions=InteractionFile(
            path["interactions"], "user_id", "item_id", "timestamp", label_column
        ),
        kind=None if e_kind is None else e_kind.name,
    )
    passive = PartyFiles(
        name=names[1],
        role="passive",
        users=entity("p_users", "user_id", None if p_kind is None else p_kind.users),
        kind=None if p_kind is None else p_kind.name,
    )
    return active, passive


def _check_schema(stem: str, table: pd.DataFrame, schema: TableSchema) -> None:
    """The generated table holds exactly the schema's columns (so kind and generator agree)."""
    declared = {schema.id_column, *schema.numeric, *schema.categorical}
    if set(table.columns) != declared:
        raise ValueError(
            f"{stem}: the generated columns {sorted(set(table.columns) - declared)} are not in "
            f"its kind's schema, which lists {sorted(declared - set(table.columns))} not generated"
        )


def _file_columns(spec: EntityFile | InteractionFile) -> list[str]:
    """Columns of a data file that must be present and NaN-free."""
    if isinstance(spec, InteractionFile):
        cols = [spec.user_column, spec.item_column, spec.time_column, spec.label_column]
        return [c for c in cols if c is not None]
    return [spec.id_column, *spec.numeric, *spec.categorical]


def write_party_dir(
    out_dir: Path,
    *,
    job: str,
    seed: int,
    active: PartyFiles,
    passive: PartyFiles,
    tables: dict[str, pd.DataFrame],
    fmt: FileFormat,
    settings: dict[str, dict[str, object]] | None = None,
) -> dict[str, Path]:
    """Write both parties' data files, ``e_party.toml``, ``p_party.toml`` and ``job.toml``.

    ``tables`` maps the stem of each data path in the two configs (``e_users`` for
    ``e_users.csv``) to its frame. Returns every written
    path keyed by file stem (``e_users``, ``items``, ..., ``e_party``, ``p_party``, ``job``).

    Raises:
        ValueError: if a configured file has no table, or a configured column is missing or NaN.
    """
    out_dir = Path(out_dir)
    paths: dict[str, Path] = {}
    for party in (active, passive):
        for spec in (party.users, party.items, party.interactions):
            if spec is None:
                continue
            target = out_dir / spec.path
            if target.stem not in tables:
                raise ValueError(f"no table given for {spec.path}")
            paths[target.stem] = write_table(
                tables[target.stem], target, fmt, features=_file_columns(spec)
            )
    paths["e_party"] = write_party_config(out_dir / "e_party.toml", active)
    paths["p_party"] = write_party_config(out_dir / "p_party.toml", passive)
    paths["job"] = write_job_config(
        out_dir / "job.toml",
        name=job,
        seed=seed,
        active="e_party.toml",
        passive="p_party.toml",
        settings=settings,
    )
    return paths
