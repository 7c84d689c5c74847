"""`nanostrain analyze`: the SXDM strain analysis of a stored run on dask.distributed equals
the single-process result and the live derived run; --write supersedes the live run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import bluesky.plans as bp
import numpy as np
import pytest

from nanostrain.analyze import AnalyzeError, SchedulerUnreachable, dask_client, frame_pieces, plan, publish, reduce
from nanostrain.callbacks.sxdm_plots import maps_from_derived_run
from nanostrain.cli import main
from nanostrain.schema.catalog import derived_runs
from nanostrain.session import make_session

from ..conftest import API_KEY, free_port

pytestmark = pytest.mark.slow

MAPS = ("intensity", "dd_over_d", "theta_xy", "theta_xz", "d_A", "mask", "signal")
FRAME_BYTES = 64 * 64 * 2  # the simulated Merlin's uint16 frames
TASK_BYTES = 16 * FRAME_BYTES  # two raster lines per task: 20 tasks of the 8 x 8 x 5 raster


def _stored(session, uid: str, timeout_s: float = 120.0):
    """The raw run and its live sxdm_strain derived run once the catalog holds both stops."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [r for r in derived_runs(session.derived, uid) if r.metadata["start"]["analysis"] == "sxdm_strain"]
        if runs and runs[0].metadata.get("stop") and session.catalog[uid].metadata.get("stop"):
            return session.catalog[uid], runs[0]
        time.sleep(0.25)
    raise TimeoutError(f"run {uid} and its derived run did not reach the catalog")


@pytest.fixture(scope="module")
def sxdm(tmp_path_factory):
    """A session and a stored 8 x 8 raster at 5 rocking angles (fly) of SC-NC91."""
    session = make_session(data_dir=tmp_path_factory.mktemp("analyze") / "data", api_key=API_KEY,
                           persist_metadata=False)
    d = session.devices
    detector = d["merlin"]
    session.RE(session.plans["mount_sample"](detector, {"material": "NC91", "morphology": "SC"},
                                             cycles=0, charge_V=4.3, current_mA_g=100.0))
    theta_b = detector.sxdm_geometry().two_theta_deg / 2
    (uid,) = session.RE(session.plans["sxdm_rocking_raster"](
        detector, d["np_stage"], d["np_theta"], (0.0, 1.4), (-1.1, 0.3), 0.2,
        theta_b + np.linspace(-0.5, 0.5, 5), "fly", monitor=d["np_i0"], background=0.1, progress=False))
    _stored(session, uid)
    yield session, uid
    session.close()


@pytest.fixture(scope="module")
def job(sxdm):
    session, uid = sxdm
    return plan(session.catalog[uid], session.server.uri, API_KEY, session.derived, task_bytes=TASK_BYTES)


@pytest.fixture(scope="module")
def cluster():
    with dask_client(workers=2) as client:
        yield client


def _maps(published) -> dict[str, np.ndarray]:
    streams = {doc["uid"]: doc["name"] for name, doc in published if name == "descriptor"}
    (maps,) = [doc["data"] for name, doc in published if name == "event" and streams[doc["descriptor"]] == "maps"]
    return maps


def _stream(published, stream: str) -> list[dict]:
    streams = {doc["uid"]: doc["name"] for name, doc in published if name == "descriptor"}
    return [doc["data"] for name, doc in published if name == "event" and streams[doc["descriptor"]] == stream]


def test_tasks_cover_every_frame_once_in_whole_raster_lines(job):
    seq_nums = [seq for task in job.tasks for seq in task.seq_nums]
    assert seq_nums == list(range(1, 8 * 8 * 5 + 1))
    assert len(job.tasks) == 20 and all(len(task.seq_nums) == 16 for task in job.tasks)


def test_frame_pieces_cut_datums_at_task_bounds():
    resource = {"uid": "r"}
    datums = [{"uid": f"d{i}", "seq_nums": {"start": 1 + 5 * i, "stop": 6 + 5 * i},
               "indices": {"start": 5 * i, "stop": 5 * i + 5}} for i in range(3)]
    tasks = frame_pieces([(resource, d) for d in datums], 4)
    spans = [[(p["seq_nums"]["start"], p["seq_nums"]["stop"], p["indices"]["start"]) for _, p in t] for t in tasks]
    assert spans == [[(1, 5, 0)], [(5, 6, 4), (6, 9, 5)], [(9, 11, 8), (11, 13, 10)], [(13, 16, 12)]]


def test_two_workers_equal_the_single_process_reduction_and_the_live_maps(sxdm, job, cluster):
    session, uid = sxdm
    single = reduce(job, None, progress=False)
    distributed = reduce(job, cluster, progress=False)
    assert single[0].n_frames == distributed[0].n_frames == 320
    np.testing.assert_allclose(distributed[0].intensity_by_angle, single[0].intensity_by_angle, rtol=1e-12, atol=1e-9)
    maps = _maps(publish(job, distributed))
    live_run = [r for r in derived_runs(session.derived, uid) if r.metadata["start"]["analysis"] == "sxdm_strain"][0]
    live = maps_from_derived_run(live_run)
    assert live["mask"].sum() >= 8
    for key in MAPS:
        np.testing.assert_allclose(np.asarray(maps[key], dtype=float), np.asarray(live[key], dtype=float),
                                   rtol=1e-10, atol=1e-15, equal_nan=True, err_msg=key)
    for key in ("sigma_dd_over_d", "sigma_theta_xy_deg", "sigma_theta_xz_deg", "d_ref_A"):
        assert maps[key] == pytest.approx(live[key], rel=1e-9), key


def test_the_derived_run_is_the_live_one_angle_by_angle(sxdm, job, cluster):
    session, uid = sxdm
    published = publish(job, reduce(job, cluster, progress=False))
    (start,) = [doc for name, doc in published if name == "start"]
    live_run = [r for r in derived_runs(session.derived, uid) if r.metadata["start"]["analysis"] == "sxdm_strain"][0]
    assert start["parameters"] == live_run.metadata["start"]["parameters"] and start["derived_from"] == uid
    angles = _stream(published, "angles")
    assert [a["theta_index"] for a in angles] == list(range(5))
    live_dd = np.asarray(live_run["angles"]["dd_over_d"].read())
    np.testing.assert_allclose(np.array([a["dd_over_d"] for a in angles], dtype=float), live_dd,
                               rtol=1e-10, atol=1e-15, equal_nan=True)
    assert [doc["exit_status"] for name, doc in published if name == "stop"] == ["success"]


def test_workers_read_through_the_catalog_where_they_do_not_see_the_files(job, cluster):
    from dataclasses import replace

    hidden = replace(job, tasks=[
        replace(task, pieces=tuple(({**r, "uri": "file://localhost/nowhere/x.h5"}, d) for r, d in task.pieces))
        for task in job.tasks[:3]])
    through_catalog = reduce(hidden, cluster, progress=False)
    from_files = reduce(replace(job, tasks=job.tasks[:3]), None, progress=False)
    assert through_catalog[0].n_frames == 48
    np.testing.assert_array_equal(through_catalog[0].intensity_by_angle, from_files[0].intensity_by_angle)


def test_a_run_that_is_not_sxdm_is_refused(sxdm):
    session, _ = sxdm
    (uid,) = session.RE(bp.count([session.devices["i0"]], num=2))
    deadline = time.monotonic() + 60
    while not session.catalog[uid].metadata.get("stop") and time.monotonic() < deadline:
        time.sleep(0.2)
    with pytest.raises(AnalyzeError, match="not an SXDM run"):
        plan(session.catalog[uid], session.server.uri, API_KEY, session.derived)


def test_cli_errors_unknown_uid_and_unreachable_scheduler(sxdm, capsys, monkeypatch):
    session, uid = sxdm
    monkeypatch.setenv("NANOSTRAIN_API_KEY", API_KEY)
    assert main(["analyze", "no-such-run", "--catalog", session.server.uri]) == 2
    assert "no run 'no-such-run' among the catalog's raw runs" in capsys.readouterr().err
    with pytest.raises(SchedulerUnreachable):
        with dask_client(f"tcp://127.0.0.1:{free_port()}"):
            pass
    assert main(["analyze", uid, "--catalog", session.server.uri, "--scheduler", f"tcp://127.0.0.1:{free_port()}"]) == 2
    assert "no dask scheduler answered" in capsys.readouterr().err


def test_cli_write_supersedes_the_live_derived_run(sxdm):
    session, uid = sxdm
    (before,) = [r.metadata["start"]["uid"] for r in derived_runs(session.derived, uid)
                 if r.metadata["start"]["analysis"] == "sxdm_strain"]
    result = subprocess.run(
        [sys.executable, "-m", "nanostrain", "analyze", uid, "--catalog", session.server.uri, "--workers", "2", "--write"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "NANOSTRAIN_API_KEY": API_KEY})
    assert result.returncode == 0, result.stderr
    assert "320 frames" in result.stdout and "written to the catalog" in result.stdout
    assert "analyze" not in result.stderr  # no progress bar off a terminal
    runs = [r for r in derived_runs(session.derived, uid) if r.metadata["start"]["analysis"] == "sxdm_strain"]
    assert len(runs) == 1 and runs[0].metadata["start"]["uid"] != before
    assert runs[0].metadata["stop"]["exit_status"] == "success"
    assert runs[0].metadata["start"]["uid"] in result.stdout


def test_a_frame_no_worker_can_read_fails_the_reduction_naming_the_file(job, cluster):
    from dataclasses import replace

    from nanostrain.callbacks.frames import DetectorFileError

    task = job.tasks[-1]
    beyond = tuple((r, {**d, "indices": {"start": d["indices"]["start"] + 10_000, "stop": d["indices"]["stop"] + 10_000}})
                   for r, d in task.pieces)
    broken = replace(job, tasks=job.tasks[:2] + [replace(task, pieces=beyond)])
    with pytest.raises(DetectorFileError, match="detector file .* holds 320 frames"):
        reduce(broken, cluster, progress=False)
