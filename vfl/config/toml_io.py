"""Read TOML config files and turn every parse or validation failure into a :class:`ConfigError`.

Models validated here receive a validation context ``{"base_dir": <config file's directory>}``;
:data:`ConfigPath` fields use it to resolve relative paths and to check that the file exists.
Model validators report cross-field rule violations with :func:`rule_error`, so the resulting
``ConfigError`` carries the exact dotted key and a fix.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ValidationError, ValidationInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from vfl.errors import ConfigError, VflError

M = TypeVar("M", bound=BaseModel)

_RULE = "config_rule"
_SYNTAX_KEY = "<toml syntax>"
_FILE_KEY = "<file>"

# pydantic error type -> what the user should have written
_EXPECTED: dict[str, str] = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a quoted string",
    "list_type": "a list, e.g. [1, 2]",
    "tuple_type": "a list, e.g. [1, 2]",
    "model_type": "a table, i.e. a [section]",
    "dict_type": "a table, i.e. a [section]",
    "path_type": "a quoted path string",
}


def rule_error(problem: str, fix: str, field: str = "") -> PydanticCustomError:
    """Build the error a model validator raises for a broken rule.

    ``field`` is appended to the validator's location to form the dotted key (e.g. the
    validator of ``[users]`` with ``field="categorical"`` reports ``users.categorical``).
    """
    return PydanticCustomError(_RULE, "{problem}", {"problem": problem, "fix": fix, "field": field})


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Resolve ``value`` against the config file's directory and require that it exists."""
    context = info.context if isinstance(info.context, dict) else {}
    base_dir = context.get("base_dir")
    if base_dir is None:
        return value
    resolved = (Path(base_dir) / value.expanduser()).resolve()
    if resolved.is_dir():
        raise rule_error(
            f"{resolved} is a directory, not a file",
            "name the file inside it (e.g. .../users.csv), not the directory",
        )
    if not resolved.is_file():
        raise rule_error(
            f"file not found: looked for {resolved}",
            f"correct the path; relative paths are relative to the config file's "
            f"directory {Path(base_dir).resolve()}",
        )
    return resolved


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A file path in a config: resolved against the config file's directory, must exist."""


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8 or not valid TOML (with line).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            str(file), _FILE_KEY, f"config file not found: {file.resolve()}", "check the path"
        ) from exc
    except IsADirectoryError as exc:
        raise ConfigError(
            str(file),
            _FILE_KEY,
            f"{file.resolve()} is a directory, not a config file",
            "name the .toml file inside it",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            str(file),
            _FILE_KEY,
            f"cannot read the file ({exc})",
            "make it a readable UTF-8 text file",
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            str(file),
            _SYNTAX_KEY,
            f"invalid TOML {_toml_position(exc)}: {exc}",
            "fix the TOML syntax at that line (strings need quotes, one 'key = value' per line)",
        ) from exc


def _toml_position(exc: tomllib.TOMLDecodeError) -> str:
    """Return 'at line L, column C' from a TOML error, or '' if unknown."""
    line = getattr(exc, "lineno", None)
    if line is None:
        match = re.search(r"line (\d+), column (\d+)", str(exc))
        if match is None:
            return ""
        return f"at line {match.group(1)}, column {match.group(2)}"
    return f"at line {line}, column {getattr(exc, 'colno', '?')}"


def validate_config(model: type[M], data: dict[str, Any], file: str | Path) -> M:
    """Validate parsed TOML against ``model``, resolving paths relative to ``file``.

    Raises:
        ConfigError: for the first validation problem (the message counts the others).
    """
    file = Path(file)
    try:
        return model.model_validate(data, context={"base_dir": file.resolve().parent})
    except ValidationError as exc:
        raise config_error_from(exc, model, file) from exc


def load_toml_model(model: type[M], path: str | Path) -> M:
    """Read ``path`` as TOML and validate it against ``model``."""
    return validate_config(model, read_toml(path), path)


def config_error_from(exc: ValidationError, model: type[BaseModel], file: Path) -> ConfigError:
    """Translate the first error of a pydantic ``ValidationError`` into a ``ConfigError``."""
    errors = exc.errors()
    first = errors[0]
    key, problem, fix = _describe(first, model)
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more problem(s) in this file)"
    return ConfigError(str(file), key, problem, fix)


def _describe(err: ErrorDetails, model: type[BaseModel]) -> tuple[str, str, str]:
    """Return (dotted key, problem, fix) for one pydantic error."""
    loc = tuple(err["loc"])
    key = _dotted(loc)
    kind = err["type"]
    if kind == _RULE:
        ctx = err.get("ctx", {})
        key = _dotted((*loc, ctx["field"])) if ctx.get("field") else key
        return key, str(ctx["problem"]), str(ctx["fix"])
    if kind == "extra_forbidden":
        return key, *_unknown_key(loc, model)
    if kind == "missing":
        if _is_section(loc, model):
            return key, "missing required section", f"add a [{key}] section"
        section = _dotted(loc[:-1])
        where = f"under [{section}]" if section else "at the top of the file"
        return key, "missing required key", f"add '{loc[-1]} = ...' {where}"
    expected = _expected(err)
    got = _short_repr(err.get("input"))
    return key, f"expected {expected}, got {got}", f"set '{key}' to {expected}"


def _expected(err: ErrorDetails) -> str:
    """Describe the value pydantic wanted, in TOML terms."""
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "enum":
        return f"one of {ctx.get('expected')}"
    if kind == "greater_than":
        return f"a number greater than {ctx.get('gt')}"
    if kind == "greater_than_equal":
        return f"a number greater than or equal to {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"a number at most {ctx.get('le')}"
    if kind == "multiple_of":
        return f"a multiple of {ctx.get('multiple_of')}"
    return _EXPECTED.get(kind, f"a valid value ({err['msg']})")


def _unknown_key(loc: tuple[Any, ...], model: type[BaseModel]) -> tuple[str, str]:
    """Return (problem, fix) for an unknown key, suggesting the closest allowed name."""
    allowed = _allowed_keys(loc[:-1], model)
    name = str(loc[-1])
    close = difflib.get_close_matches(name, allowed, n=1)
    problem = f"unknown key; did you mean '{close[0]}'?" if close else "unknown key"
    section = _dotted(loc[:-1])
    where = f"[{section}]" if section else "the top level"
    return problem, f"rename or remove it; allowed keys in {where}: {', '.join(allowed)}"


def _model_at(loc: tuple[Any, ...], model: type[BaseModel]) -> type[BaseModel] | None:
    """Follow ``loc`` through nested models; None if it does not lead to a model."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part))
        current = _model_in(field.annotation) if field is not None else None
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """Return the BaseModel class in ``annotation`` (plain or inside ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _allowed_keys(loc: tuple[Any, ...], model: type[BaseModel]) -> list[str]:
    """Field names allowed at ``loc``."""
    target = _model_at(loc, model)
    return list(target.model_fields) if target is not None else []


def _is_section(loc: tuple[Any, ...], model: type[BaseModel]) -> bool:
    """True if ``loc`` names a nested table rather than a plain key."""
    return bool(loc) and _model_at(loc, model) is not None


def _dotted(loc: tuple[Any, ...]) -> str:
    """Join a pydantic location into a TOML dotted key: ('model', 'top_hidden', 0) -> ..."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int) and parts:
            parts[-1] += f"[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts)


def _short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_pem_files(section: str, ca: Path, cert: Path, key: Path) -> tuple[bytes, bytes, bytes]:
    """``(ca_pem, cert_pem, key_pem)`` read from the files a config section names.

    Raises:
        VflError: a file vanished or became unreadable after the config was loaded; the
            message names ``section.field``, the path and the fix.
    """
    pems: list[bytes] = []
    for field, path in (("ca", ca), ("cert", cert), ("key", key)):
        try:
            pems.append(path.read_bytes())
        except OSError as exc:
            raise VflError(
                f"cannot read {section}.{field} file {path} ({exc}). Fix: make it a readable "
                "PEM file, e.g. one written by 'vfl certs'"
            ) from exc
    return pems[0], pems[1], pems[2]
