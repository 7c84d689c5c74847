"""The architecture's dependency direction, enforced by import-linter.

import-linter scans the package on disk, and the repository maps the root folders
(analysis/, devices/, ...) into the `nanostrain` namespace at install time. The test
therefore lays the package out as installed (a copy in a temporary folder) and runs
the contracts of pyproject.toml against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

LAYERS = ("devices", "plans", "callbacks", "analysis", "sim")


def test_import_contracts_hold(repo_root, tmp_path):
    package = tmp_path / "nanostrain"
    shutil.copytree(repo_root / "nanostrain", package, ignore=shutil.ignore_patterns("__pycache__"))
    for layer in LAYERS:
        shutil.copytree(repo_root / layer, package / layer, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo_root / "pyproject.toml", tmp_path / "pyproject.toml")
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


def test_analysis_imports_no_beamline_stack():
    code = (
        "import sys, nanostrain.analysis.frames;"
        "bad = [m for m in ('bluesky', 'tiled', 'ophyd', 'ophyd_async') if m in sys.modules];"
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
