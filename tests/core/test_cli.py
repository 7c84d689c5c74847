"""The command line and the IPython profile, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    assert not any("derived:" in line for line in listing.stdout.splitlines())
    derived = nanostrain("catalog", "ls", "--derived", "--last", "200", "--data-dir", str(tmp_path / "d"))
    assert any("derived:frame_statistics" in line for line in derived.stdout.splitlines())
    replayed = nanostrain("replay", raw_uid, "--data-dir", str(tmp_path / "d"))
    assert replayed.returncode == 0, replayed.stderr
    assert "1 derived run(s), 11 event(s)" in replayed.stdout


def test_replay_of_an_unknown_uid_says_so(tmp_path):
    result = nanostrain("replay", "no-such-uid", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "No run 'no-such-uid'" in result.stderr


#: run in the shell: what the profile put in the namespace, and a scan through it
SHELL_CODE = (
    "import nanostrain; g = globals(); "
    "print('FROM', nanostrain.__file__); "
    "print('NAMES', ' '.join(k for k in ('RE', 'catalog', 'cam', 'sx', 'i0', 'cycler', 'xrd', 'alignment_scan', "
    "'operando_xrd', 'xrd_reduction_lattice_change_A') if k in g)); "
    "uid, = RE(alignment_scan(cam, sx, -1, 1, 3, monitor=i0)); "
    "print('RUN', catalog[uid].metadata['start']['technique']); "
    "print('LAST', catalog[-1].metadata['start']['uid'] == uid, len(db[-1].table()), "
    "len(session.derived_runs(uid)))"
)
SHELL_NAMES = {"RE", "catalog", "cam", "sx", "i0", "cycler", "xrd", "alignment_scan", "operando_xrd",
               "xrd_reduction_lattice_change_A"}


def _check_shell_output(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "RUN alignment" in lines
    assert "LAST True 3 1" in lines  # the banner's catalog[-1] is the raw run; db is databroker's v1
    assert set(next(line for line in lines if line.startswith("NAMES")).split()[1:]) == SHELL_NAMES
    return next(line for line in lines if line.startswith("FROM")).split(maxsplit=1)[1]


@pytest.mark.slow
def test_shell_loads_the_profile_with_devices_plans_signals_and_catalog(tmp_path):
    result = nanostrain("shell", "--data-dir", str(tmp_path / "d"), "-c", SHELL_CODE, cwd=tmp_path,
                        env={"NANOSTRAIN_BEC": "0", "NANOSTRAIN_PLOTS": "0"})
    _check_shell_output(result)


@pytest.mark.slow
def test_shell_works_from_an_installed_wheel_in_a_temporary_directory(tmp_path, repo_root):
    """Build a wheel, install it (no deps) into a fresh venv that sees this environment's
    packages, and start `nanostrain shell` from an empty folder: the profile must come
    from the installed package, not the source checkout."""
    import sysconfig

    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", str(repo_root), "-w", str(wheels)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("nanostrain-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # A venv made from a venv sees the base interpreter's packages, not this one's: point
    # it at ours as a plain path (no .pth processing, so our editable install stays out).
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = subprocess.run(
        [str(venv / "bin" / "nanostrain"), "shell", "--data-dir", "d", "-c", SHELL_CODE], cwd=workdir,
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "NANOSTRAIN_BEC": "0", "NANOSTRAIN_PLOTS": "0", "PYTHONPATH": ""},
    )
    source = _check_shell_output(result)
    assert Path(source).is_relative_to(venv) and not Path(source).is_relative_to(repo_root)
