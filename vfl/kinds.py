"""Kinds of organisation: the one loader of the definitions in the top-level ``parties/``.

A kind (``parties/ecommerce.py``, ``parties/payments.py``, ...) says what an organisation of
that kind brings to a job: its role, the columns and types of its tables in the embedded
data, how its numeric features are transformed, and its bottom model. A party config chooses
one by name, ``[party] kind = "payments"`` (default: ``ecommerce`` for the active role,
``payments`` for the passive one), so a new kind of partner is one new file in ``parties/``
holding ``KIND = PartyKind(...)``.

The library never imports ``parties/`` at module import time: :func:`party_kind` imports the
one module a config names, when a party first needs it (loading its data, building its
bottom model). :func:`kind_names` lists the files without importing them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from typing import TYPE_CHECKING

import numpy as np

from vfl.config.party import PartyConfig, Role
from vfl.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from vfl.config.job import ModelConfig
    from vfl.training.inputs import TableTensors

PACKAGE = "parties"
DEFAULT_KIND = {Role.ACTIVE: "ecommerce", Role.PASSIVE: "payments"}

NumericTransform = Callable[[np.ndarray], np.ndarray]
"""One numeric column of this party's own rows -> float32 model inputs (e.g. z-scores)."""


@dataclass(frozen=True)
class TableSchema:
    """A table's id column and its feature columns by type, in the order the model reads them."""

    id_column: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()


@dataclass(frozen=True)
class BottomInputs:
    """What a bottom model is sized from: the party's feature tensors (items: active only)."""

    users: TableTensors
    items: TableTensors | None = None
    n_users: int = 0


BottomFactory = Callable[[BottomInputs, "ModelConfig"], "nn.Module"]
"""``(inputs, [model] settings) -> bottom model``: P's maps user features to ``b`` in
``(-1, 1)^d`` (``d = model.passive_out``); E's maps (user, item) rows to ``e``."""


@dataclass(frozen=True)
class PartyKind:
    """One kind of organisation (see the module docstring).

    ``users`` / ``items``: the tables of this kind in the embedded synthetic data, which
    ``vfl data synth`` writes into the generated party config (``items`` only for the
    active role). ``numeric``: the transform of each numeric feature column.
    """

    name: str
    role: Role
    about: str
    users: TableSchema
    numeric: NumericTransform
    bottom: BottomFactory
    items: TableSchema | None = None


def kind_names() -> tuple[str, ...]:
    """The kinds ``parties/`` defines (its module names), without importing them."""
    spec = find_spec(PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        return ()
    found = pkgutil.iter_modules(list(spec.submodule_search_locations))
    return tuple(sorted(m.name for m in found if not m.name.startswith("_")))


def kind_of(cfg: PartyConfig) -> str:
    """The kind a party config names, or the default of its role."""
    return cfg.party.kind or DEFAULT_KIND[cfg.role]


def load_kind(name: str, *, where: str = "party config") -> PartyKind:
    """The ``KIND`` of ``parties/<name>.py``.

    Raises:
        ConfigError: ``parties/`` has no such module (naming ``party.kind`` and the choices).
    """
    if name not in kind_names():
        raise ConfigError(
            where,
            "party.kind",
            f"no kind '{name}' in {PACKAGE}/ (kinds: {', '.join(kind_names()) or 'none found'})",
            f"use one of the kinds, or add {PACKAGE}/{name}.py defining KIND",
        )
    kind: PartyKind = importlib.import_module(f"{PACKAGE}.{name}").KIND
    return kind


def party_kind(cfg: PartyConfig) -> PartyKind:
    """Load the definition of the kind ``cfg`` names, checked against its role.

    Raises:
        ConfigError: the kind does not exist, or is of the other role (naming ``party.kind``).
    """
    name, where = kind_of(cfg), f"party config of '{cfg.party.name}'"
    kind = load_kind(name, where=where)
    if kind.role is not cfg.role:
        raise ConfigError(
            where,
            "party.kind",
            f"kind '{name}' is for the {kind.role.value} role, this party is {cfg.role.value}",
            f'set party.kind to a {cfg.role.value} kind, or party.role = "{kind.role.value}"',
        )
    return kind
