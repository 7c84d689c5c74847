"""The command line and the IPython profile, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nanostrain.cli import build_parser


def nanostrain(*args: str, cwd=None, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nanostrain", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


def test_help_lists_every_command():
    text = build_parser().format_help()
    for command in ("serve", "shell", "replay", "demo", "catalog"):
        assert command in text


def test_serve_rejects_a_non_postgres_database_clearly(tmp_path):
    result = nanostrain("serve", "--data-dir", str(tmp_path), "--database", "mysql://x/y")
    assert result.returncode != 0
    assert "postgresql://" in result.stderr


@pytest.mark.slow
def test_demo_then_catalog_ls_then_replay(tmp_path):
    demo = nanostrain("demo", "--quick", "--data-dir", str(tmp_path / "d"))
    assert demo.returncode == 0, demo.stderr
    assert "Where to look" in demo.stdout
    assert (tmp_path / "d" / "figures" / "alignment.png").stat().st_size > 10_000
    listing = nanostrain("catalog", "ls", "--last", "200", "--data-dir", str(tmp_path / "d"))
    assert listing.returncode == 0, listing.stderr
    raw_uid = next(line.split()[0] for line in listing.stdout.splitlines() if " alignment " in line)
    assert any("derived:frame_statistics" in line for line in listing.stdout.splitlines())
    replayed = nanostrain("replay", raw_uid, "--data-dir", str(tmp_path / "d"))
    assert replayed.returncode == 0, replayed.stderr
    assert "1 derived run(s), 11 event(s)" in replayed.stdout


def test_replay_of_an_unknown_uid_says_so(tmp_path):
    result = nanostrain("replay", "no-such-uid", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "No run 'no-such-uid'" in result.stderr


@pytest.mark.slow
def test_profile_builds_a_session_with_devices_plans_and_catalog(tmp_path, repo_root):
    code = "uid, = RE(alignment_scan(cam, sx, -1, 1, 3, monitor=i0)); print('RUN', catalog[uid].metadata['start']['technique'])"
    result = subprocess.run(
        [sys.executable, "-m", "IPython", f"--profile-dir={repo_root / 'profile'}", "-c", code],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "NANOSTRAIN_DATA_DIR": str(tmp_path / "d"), "NANOSTRAIN_BEC": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert "RUN alignment" in result.stdout
    devices_line = next(line for line in result.stdout.splitlines() if line.strip().startswith("devices:"))
    assert {"cam", "i0", "sx", "cycler", "xrd"} <= set(devices_line.split(":", 1)[1].replace(",", " ").split())
