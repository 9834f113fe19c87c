"""Structure rules: layering of vfl's packages, lint and types."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VFL = ROOT / "vfl"

# package -> packages it must never import (directly)
FORBIDDEN = {
    "crypto": {"transport", "protocol", "party", "coordinator", "cli", "training", "models"},
    "psi": {"transport", "party", "coordinator", "cli", "training"},
    "protocol": {"transport", "party", "coordinator", "cli", "training"},
    "models": {"crypto", "psi", "protocol", "transport", "party", "coordinator", "cli"},
    "data": {"models", "protocol", "transport", "crypto", "training", "cli"},
    "evaluation": {"models", "protocol", "transport", "crypto", "training", "cli"},
    "transport": {"protocol", "training", "party", "coordinator", "cli"},
}


def _imported_vfl_packages(path: Path) -> set[str]:
    names = _all_imports(path)
    return {n.split(".")[1] for n in names if n.startswith("vfl.")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layering(package: str) -> None:
    bad = {
        str(f.relative_to(ROOT)): sorted(_imported_vfl_packages(f) & FORBIDDEN[package])
        for f in (VFL / package).glob("*.py")
    }
    assert not {f: b for f, b in bad.items() if b}


def test_kinds_of_parties_build_on_definitions_only() -> None:
    # A kind (parties/*.py) names schemas, transforms and models: no processes, no crypto.
    allowed = {"config", "data", "models", "kinds", "errors"}
    for f in (ROOT / "parties").glob("*.py"):
        assert _imported_vfl_packages(f) <= allowed, f


def test_only_grpc_modules_import_grpc() -> None:
    for f in VFL.rglob("*.py"):
        if f.name.startswith("grpc_"):
            continue
        mods = {n.split(".")[0] for n in _all_imports(f)}
        assert "grpc" not in mods, f


def _all_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


# Modules run only by measurement scripts, not by the `vfl` command (module -> why it stays).
MEASUREMENT_ONLY = {
    "vfl.evaluation.attribute_attack": "E's attack on z_B: benchmarks/privacy.py, privacy_zb.py",
}


def _module_files() -> dict[str, Path]:
    """``{"vfl.crypto.paillier": path}`` for every module of the package (``__init__`` as the
    package's own name)."""
    out = {}
    for f in VFL.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _vfl_imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The vfl modules ``path`` imports, anywhere in it (also inside functions), including the
    packages on the way (importing ``vfl.a.b`` runs ``vfl.a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    out = set()
    for target in found:
        parts = target.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules
    return out


def test_every_module_is_used_by_the_vfl_command() -> None:
    # Prepare: the entry points are the console script of pyproject.toml and `python -m vfl`;
    # the kinds of parties/ are loaded by vfl.kinds, so what they import is used too
    files = _module_files()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    roots = [target.split(":")[0] for target in scripts.values()] + ["vfl.__main__"]
    for kind in (ROOT / "parties").glob("*.py"):
        roots += sorted(_vfl_imports(f"parties.{kind.stem}", kind, set(files)))
    # Execute: every module reachable from them by imports
    reached: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(_vfl_imports(name, files[name], set(files)) - reached)
    # Assert
    unused = sorted(set(files) - reached - set(MEASUREMENT_ONLY))
    assert not unused, f"modules no production code imports (delete them or use them): {unused}"
    assert not set(MEASUREMENT_ONLY) & reached, "listed as measurement-only but used: drop it"


def test_ruff_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "vfl", "parties", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout


def test_mypy_strict_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "vfl", "parties"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout
