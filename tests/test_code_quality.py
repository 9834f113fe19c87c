"""Structure rules: layering of vfl's packages, lint and types."""

from __future__ import annotations

import ast
import subprocess
import sys
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


def test_ruff_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "vfl", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout


def test_mypy_strict_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "vfl"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout
