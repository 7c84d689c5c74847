"""The command line and the IPython profile, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from nanostrain.catalog import wait_until_up
from nanostrain.cli import build_parser

from ..conftest import free_port


def nanostrain(*args: str, cwd=None, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nanostrain", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


def test_help_lists_every_command():
    text = build_parser().format_help()
    for command in ("serve", "shell", "replay", "refine", "demo", "catalog"):
        assert command in text


def test_serve_rejects_a_non_postgres_database_clearly(tmp_path):
    result = nanostrain("serve", "--data-dir", str(tmp_path), "--database", "mysql://x/y")
    assert result.returncode != 0
    assert "postgresql://" in result.stderr


@pytest.mark.slow
def test_demo_then_catalog_ls_then_replay(tmp_path):
    demo = nanostrain("demo", "--quick", "--data-dir", str(tmp_path / "d"), timeout=1200)
    assert demo.returncode == 0, demo.stderr
    assert "Where to look" in demo.stdout
    assert (tmp_path / "d" / "figures" / "alignment.png").stat().st_size > 10_000
    listing = nanostrain("catalog", "ls", "--json", "--data-dir", str(tmp_path / "d"))
    assert listing.returncode == 0, listing.stderr
    runs = json.loads(listing.stdout)
    # the default shows the whole quick campaign, the operando XRD runs included
    assert {"alignment", "xrd", "txm", "sxdm"} <= {run["technique"] for run in runs}
    assert all("xrd_reduction" in {d["analysis"] for d in run["derived"]} for run in runs if run["technique"] == "xrd")
    (alignment,) = [run for run in runs if run["technique"] == "alignment"]
    assert [d["analysis"] for d in alignment["derived"]] == ["frame_statistics"]
    replayed = nanostrain("replay", alignment["uid"], "--data-dir", str(tmp_path / "d"))
    assert replayed.returncode == 0, replayed.stderr
    assert "1 derived run(s), 11 event(s)" in replayed.stdout


@pytest.mark.parametrize("command", [("catalog", "ls"), ("catalog", "recover"), ("catalog", "migrate"),
                                     ("replay", "some-uid"), ("refine", "some-uid")])
def test_reading_commands_refuse_a_data_dir_without_a_catalog_and_create_nothing(tmp_path, command):
    missing = tmp_path / "typo"

    result = nanostrain(*command, "--data-dir", str(missing))

    assert result.returncode == 2
    assert f"--data-dir {missing}: no catalog there" in result.stderr and "Traceback" not in result.stderr
    assert not missing.exists()


def test_serve_refuses_a_missing_data_dir_without_init(tmp_path):
    missing = tmp_path / "typo"

    result = nanostrain("serve", "--data-dir", str(missing), "--port", str(free_port()))

    assert result.returncode == 2 and "add --init" in result.stderr
    assert not missing.exists()


@pytest.mark.server
def test_serve_init_creates_the_catalog_and_serves_the_view(tmp_path):
    data_dir, port = tmp_path / "new" / "catalog", free_port()
    process = subprocess.Popen([sys.executable, "-m", "nanostrain", "serve", "--init", "--data-dir", str(data_dir),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", timeout=120)
        assert httpx.get(f"http://127.0.0.1:{port}/view/api/runs").json() == []
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert (data_dir / "catalog.db").is_file()
    assert f"runs:   http://127.0.0.1:{port}/view/" in output
    assert "Tiled version" not in output


def test_ls_limit_must_be_positive(tmp_path):
    result = nanostrain("catalog", "ls", "--limit", "0", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "--limit" in result.stderr


@pytest.fixture
def written_catalog(server_process):
    """A served catalog holding three raw runs (started at t = 1000, 3000, 2000 s, in
    that order of writing; the newest one still running) and a derived run of the
    middle one; returns (server, [newest, middle, oldest] uids, derived uid)."""
    from bluesky_tiled_plugins import TiledWriter
    from event_model import compose_run

    client = server_process.client()
    uids = {}
    for label, t, stop in (("oldest", 1000.0, True), ("newest", 3000.0, False), ("middle", 2000.0, True)):
        bundle = compose_run(metadata={"plan_name": "count", "technique": "xrd", "scan_id": int(t),
                                       "sample": {"name": f"SC-NM91 {label}"}}, time=t)
        writer = TiledWriter(client["raw"])
        writer("start", bundle.start_doc)
        if stop:
            writer("stop", bundle.compose_stop())
        uids[label] = bundle.start_doc["uid"]
    derived = compose_run(metadata={"analysis": "xrd_reduction", "derived_from": uids["middle"],
                                    "plan_name": "analysis:xrd_reduction", "technique": "xrd"}, time=2001.0)
    writer = TiledWriter(client["derived"])
    writer("start", derived.start_doc)
    writer("stop", derived.compose_stop())
    return server_process, [uids["newest"], uids["middle"], uids["oldest"]], derived.start_doc["uid"]


@pytest.mark.server
def test_catalog_ls_is_a_table_of_the_newest_raw_runs_with_their_derived_runs(written_catalog):
    server, (newest, middle, oldest), derived = written_catalog

    result = nanostrain("catalog", "ls", "--catalog", server.url)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["TIME", "SCAN_ID", "PLAN", "SAMPLE", "TECHNIQUE", "STATUS", "UID"]
    assert [line.split()[-1] for line in lines] == [newest[:8], middle[:8], derived[:8], oldest[:8]]
    assert lines[0].split()[2:4] == ["3000", "count"] and lines[0].split()[-2] == "running"
    assert lines[2].startswith("  ") and "-> xrd_reduction" in lines[2] and lines[2].split()[-2] == "success"


@pytest.mark.server
def test_catalog_ls_json_and_limit(written_catalog):
    server, (newest, middle, oldest), derived = written_catalog

    result = nanostrain("catalog", "ls", "--json", "--limit", "2", "--catalog", server.url)

    runs = json.loads(result.stdout)
    assert [run["uid"] for run in runs] == [newest, middle]
    assert [run["status"] for run in runs] == ["running", "success"]
    assert [d["uid"] for d in runs[1]["derived"]] == [derived]
    assert runs[1]["sample"] == "SC-NM91 middle" and runs[1]["scan_id"] == 2000


@pytest.mark.server
def test_catalog_ls_on_the_data_dir_prints_nothing_but_the_listing(written_catalog):
    server, uids, _ = written_catalog
    server.stop()  # the embedded catalog reads the same folder

    result = nanostrain("catalog", "ls", "--data-dir", str(server.settings.data_dir))

    assert result.returncode == 0 and result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 + len(uids) + 1


def test_catalog_ls_of_an_empty_catalog_says_so(server_process):
    result = nanostrain("catalog", "ls", "--catalog", server_process.url)
    assert result.returncode == 0 and result.stdout.strip() == "No runs in the catalog yet."


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
