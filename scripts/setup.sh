#!/usr/bin/env bash
# Create ./.venv (Python >= 3.11) and install nanostrain with its test extras, and
# ./.venv-blueapi with nanostrain and blueapi (a service with dependencies of its own:
# see the blueapi extra in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
for venv in .venv .venv-blueapi; do
    if [ ! -x "$venv/bin/python" ]; then
        "$PYTHON" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --upgrade pip
done
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv-blueapi/bin/python -m pip install --quiet -e ".[blueapi]"
