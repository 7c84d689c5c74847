"""The README's Python examples, run as a reader would: every ```python block, in order,
in one namespace, in a fresh folder (so ``data_dir="nanostrain-data"`` is a new embedded
catalog there)."""

from __future__ import annotations

import re

import numpy as np
import pytest


def python_blocks(text: str) -> list[str]:
    """The code of every fenced ```python block of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_python_blocks_are_found_in_order():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x\n"]


@pytest.mark.slow
def test_readme_examples_run_and_give_what_they_promise(tmp_path, monkeypatch, repo_root):
    blocks = python_blocks((repo_root / "README.md").read_text())
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for number, code in enumerate(blocks, start=1):
        exec(compile(code, f"README.md python block {number}", "exec"), namespace)
    # alignment: replay(raw) is the function, and reproduces the live derived run
    replayed = [doc["data"] for name, doc in namespace["replayed"] if name == "event"]
    assert np.array_equal([row["total"] for row in replayed], np.asarray(namespace["stats"]["total"]))
    # operando XRD: frames were taken and reduced live, the derived run ended well
    table, reduction = namespace["table"], namespace["reduction"]
    assert np.asarray(table["c_A"]).size >= 20 and np.all(np.isfinite(table["c_A"]))
    assert reduction.metadata["stop"]["exit_status"] == "success"
    assert (tmp_path / "nanostrain-data").is_dir()
