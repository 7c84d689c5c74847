"""The dependency lists say what is used where: every third-party package the installed
package imports is a declared runtime dependency, every runtime dependency is imported
(or named with its reason), and test-only packages sit in the test extra."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("nanostrain", "analysis", "callbacks", "devices", "plans", "sim", "schema", "profile")
#: runtime dependencies used without an import statement
NOT_IMPORTED = {
    "asyncpg": "the driver of the PostgreSQL catalog URIs (postgresql+asyncpg://)",
    "ipython": "`nanostrain shell` runs `python -m IPython`",
    "zict": "bluesky's PersistentDict (RE.md kept between sessions) needs it, undeclared by bluesky",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {extra: {_name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()}
    return {_name(r) for r in project["dependencies"]}, extras


def _imported(folders) -> set[str]:
    """Distributions providing the top-level modules imported in ``folders``."""
    modules = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    providers = packages_distributions()
    third_party = modules - set(sys.stdlib_module_names) - {"nanostrain", "__future__"}
    return {providers[m][0].lower().replace("_", "-") for m in third_party if m in providers}


def test_every_import_of_the_package_is_a_declared_runtime_dependency():
    runtime, _ = _declared()
    assert _imported(PACKAGE_DIRS) - runtime == set()


def test_every_runtime_dependency_is_used():
    runtime, _ = _declared()
    assert runtime - _imported(PACKAGE_DIRS) == set(NOT_IMPORTED)


@pytest.mark.parametrize("package", ["softioc", "psycopg", "pytest", "hypothesis", "stomp.py"])
def test_test_only_packages_are_in_the_test_extra_not_at_runtime(package):
    runtime, extras = _declared()
    assert package in _imported(["tests"]) and package in extras["test"] and package not in runtime
