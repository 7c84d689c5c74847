"""The architecture's dependency direction (docs/architecture.md), enforced two ways.

1. import-linter contracts (pyproject.toml). import-linter scans the package on disk, and
   the repository maps the root folders (analysis/, devices/, ...) into the `nanostrain`
   namespace at install time, so the tests lay the package out as installed (a copy in a
   temporary folder) and run the contracts against it.
2. What import-linter cannot see: it counts an import inside a function like one at the
   top of a module. Real device classes must not load the simulator, while their twins
   in the same module import it lazily; so every device module is imported in a fresh
   interpreter and no `nanostrain.sim` module may be loaded afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LAYERS = ("devices", "plans", "callbacks", "analysis", "sim", "schema", "profile")
REPO = Path(__file__).resolve().parents[2]
DEVICE_MODULES = sorted(path.stem for path in (REPO / "devices").glob("*.py") if path.stem != "__init__")


def installed_layout(repo_root: Path, target: Path) -> Path:
    """Copy the package into ``target`` as pip installs it; return the package folder."""
    package = target / "nanostrain"
    shutil.copytree(repo_root / "nanostrain", package, ignore=shutil.ignore_patterns("__pycache__"))
    for layer in LAYERS:
        shutil.copytree(repo_root / layer, package / layer, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(repo_root / "pyproject.toml", target / "pyproject.toml")
    return package


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"],
        cwd=folder, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(folder)},
    )


def test_import_contracts_hold(repo_root, tmp_path):
    installed_layout(repo_root, tmp_path)

    result = lint_imports(tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    "path, line, broken",
    [
        ("analysis/units.py", "import h5py", "analysis is pure science"),
        ("analysis/units.py", "from nanostrain.schema import start", "layers:"),
        ("schema/start.py", "from nanostrain.analysis import units", "layers:"),
        ("sim/cathode.py", "from nanostrain.devices import cycler", "layers:"),
        ("plans/alignment.py", "from nanostrain.sim import cathode", "plans never import the simulator"),
        ("callbacks/frame_stats.py", "from nanostrain.devices import beam", "callbacks never import devices"),
        ("devices/beam.py", "from nanostrain.sim import cathode", "devices reach the simulator only"),
        ("nanostrain/unplaced.py", "", "layers:"),  # exhaustive: a new module must be placed
    ],
)
def test_each_contract_catches_what_it_forbids(repo_root, tmp_path, path, line, broken):
    package = installed_layout(repo_root, tmp_path)
    target = package / path.removeprefix("nanostrain/")
    target.write_text((target.read_text() if target.exists() else "") + f"\n{line}\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 4 kept, 1 broken." in result.stdout
    assert f"{broken}" in result.stdout.split("Broken contracts")[1]


@pytest.mark.parametrize("module", DEVICE_MODULES)
def test_device_module_imports_no_simulator(module):
    """Importing a device module (its real EPICS classes) loads nothing of nanostrain.sim:
    twins import the simulator inside their constructors or methods."""
    code = (
        f"import sys, nanostrain.devices.{module};"
        "loaded = sorted(m for m in sys.modules if m == 'nanostrain.sim' or m.startswith('nanostrain.sim.'));"
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"nanostrain.devices.{module} loads {result.stdout.strip()}{result.stderr[-2000:]}"


def test_a_real_cycler_is_built_and_connected_without_the_simulator():
    code = (
        "import sys, asyncio;"
        "from nanostrain.devices.cycler import EpicsCycler;"
        "cycler = EpicsCycler('XF:17BM-ES{Cycler:1}', name='cycler');"
        "asyncio.run(cycler.connect(mock=True));"
        "loaded = sorted(m for m in sys.modules if m.startswith('nanostrain.sim'));"
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_analysis_imports_no_beamline_stack():
    """At run time too (the contract sees only our own import statements): no analysis
    module loads bluesky, tiled, ophyd, ophyd-async or event-model."""
    modules = sorted(path.stem for path in (REPO / "analysis").glob("*.py") if path.stem != "__init__")
    code = (
        "import importlib, sys;"
        f"[importlib.import_module('nanostrain.analysis.' + m) for m in {modules!r}];"
        "bad = [m for m in ('bluesky', 'tiled', 'ophyd', 'ophyd_async', 'event_model') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
