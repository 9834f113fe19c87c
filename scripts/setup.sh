#!/usr/bin/env bash
# Create ./.venv and install vfl with everything it needs, from scratch. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch first and pinned: 2.13.0 is the CPU build that satisfies pyproject's pin; letting pip
# resolve a bare torch requirement could pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet torch==2.13.0
# the Ray extra too, so that CI runs the Ray executor's tests (tests/test_ray_executor.py)
.venv/bin/python -m pip install --quiet -e '.[dev,ray]'
# MovieLens-100K ships inside the recbole wheel; we only read its data files, never import it.
.venv/bin/python -m pip install --quiet --no-deps recbole==1.2.1
echo "vfl installed in $(pwd)/.venv"
