"""The stock queue server runs the profile (issue 9, item 3, first part): ``start-re-manager
--startup-dir profile/startup`` with Redis opens the environment, and JSON items added
through ``bluesky_queueserver_api`` run; an out-of-range item fails with the plan's own
message and the next item still runs (queue mode ``ignore_failures``); operando XRD takes
its protocol as step dicts and its feedback as the name of a live signal; the XRD panel is
calibrated on CeO2 mounted by a plan, the calibration analysis's geometry named as a live signal."""

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from bluesky_queueserver_api import BPlan
from bluesky_queueserver_api.zmq import REManagerAPI

from nanostrain.catalog import CatalogSettings, EmbeddedCatalog, catalog_nodes
from nanostrain.schema.catalog import derived_runs

from ..conftest import free_port, require

STARTUP = Path(__file__).resolve().parents[2] / "profile" / "startup"


def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def manager(tmp_path):
    """A re-manager process on the profile (its own ZMQ ports and Redis prefix, the embedded
    catalog in ``tmp_path / "data"``), and its API."""
    require(redis_available(), "Redis is not reachable on 127.0.0.1:6379")
    control, info = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    env = {key: value for key, value in os.environ.items()
           if key not in ("NANOSTRAIN_CATALOG", "NANOSTRAIN_BEAMLINE_CONFIG", "NANOSTRAIN_API_KEY")}
    env.update(NANOSTRAIN_DATA_DIR=str(tmp_path / "data"), NANOSTRAIN_BEC="0", NANOSTRAIN_PLOTS="0")
    command = [
        str(Path(sys.executable).parent / "start-re-manager"), "--startup-dir", str(STARTUP),
        "--existing-plans-devices", str(STARTUP / "existing_plans_and_devices.yaml"),
        "--update-existing-plans-devices", "NEVER",
        "--user-group-permissions", str(STARTUP / "user_group_permissions.yaml"),
        "--redis-name-prefix", f"nanostrain_test_{uuid.uuid4().hex[:8]}",
        "--zmq-control-addr", control, "--zmq-info-addr", info,
    ]
    with open(tmp_path / "re-manager.log", "w") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    api = REManagerAPI(zmq_control_addr=control, zmq_info_addr=info)
    try:
        api.wait_for_condition(lambda status: status["manager_state"] == "idle", timeout=60)
        yield api
        if api.status()["worker_environment_exists"]:
            api.environment_close()
            api.wait_for_condition(lambda status: not status["worker_environment_exists"], timeout=60)
    finally:
        api.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_json_items_run_and_a_bad_one_fails_with_the_plans_message(manager, tmp_path):
    manager.environment_open()
    manager.wait_for_condition(lambda status: status["worker_environment_exists"], timeout=240)
    assert set(manager.plans_allowed()["plans_allowed"]) >= {"alignment_scan", "gitt", "operando_xrd"}
    manager.queue_mode_set(ignore_failures=True)
    manager.item_add(BPlan("alignment_scan", "cam", "sx", -1.0, 1.0, 5, monitor="i0", exposure_s=0.01,
                           sample={"name": "pinhole"}))
    manager.item_add(BPlan("alignment_scan", "cam", "sx", -1.0, 1.0, 1))  # num out of range
    manager.item_add(BPlan("gitt", "cycler", active_mass_g=6e-3,
                           protocol={"name": "gitt", "args": {"pulse_s": 60.0, "rest_s": 60.0, "max_titrations": 2}}))
    manager.item_add(BPlan("operando_xrd", "cycler", "xrd", [{"mode": "CC_CHARGE", "rate_mA_g": 200.0, "v_max": 4.3}],
                           active_mass_g=6.16e-3, cadence_mAh_g=40.0, exposure_s=0.1,
                           feedback="xrd_reduction_lattice_change_A", feedback_threshold=0.03))
    manager.item_add(BPlan("sxdm_rocking_raster", "merlin", "np_stage", "np_theta", [-0.2, 0.2], [-0.2, 0.2], 0.1,
                           [6.0, 6.1], progress=False))
    manager.item_add(BPlan("txm_xanes_2d", "txm", [8340.0 + e for e in range(0, 14, 2)], n_flats=1, n_darks=1))
    manager.item_add(BPlan("mount_sample", "xrd", "CeO2"))  # opens no run
    manager.item_add(BPlan("calibrate_xrd", "xrd", str(tmp_path / "xrd.poni"), "xrd_calibration_geometry"))
    manager.queue_start()
    manager.wait_for_idle(timeout=600)
    results = [(item["name"], item["result"]) for item in manager.history_get()["items"]]
    assert [name for name, _ in results] == [
        "alignment_scan", "alignment_scan", "gitt", "operando_xrd", "sxdm_rocking_raster", "txm_xanes_2d",
        "mount_sample", "calibrate_xrd"]
    bad = results[1][1]
    assert bad["exit_status"] == "failed" and "num must be an integer between 2" in bad["msg"] and not bad["run_uids"]
    mounted = results[6][1]
    assert mounted["exit_status"] == "completed" and not mounted["run_uids"]
    runs = results[:1] + results[2:6] + results[7:]
    for name, result in runs:
        assert result["exit_status"] == "completed" and len(result["run_uids"]) == 1, (name, result)
    assert "Distance" in (tmp_path / "xrd.poni").read_text()  # the calibration's geometry, written by the plan
    manager.environment_close()
    manager.wait_for_condition(lambda status: not status["worker_environment_exists"], timeout=60)
    with EmbeddedCatalog(CatalogSettings(data_dir=tmp_path / "data")) as catalog:  # the profile's catalog
        raw, derived = catalog_nodes(catalog.client())
        for name, result in runs:
            (uid,) = result["run_uids"]
            start = raw[uid].metadata["start"]
            assert start["plan_name"] == name and start["plan_args"], name
            assert len(derived_runs(derived, uid)) >= 1, f"{name}: no derived run"
        operando = results[3][1]["run_uids"][0]
        analyses = {run.metadata["start"]["analysis"] for run in derived_runs(derived, operando)}
        assert "xrd_reduction" in analyses
        calibration = results[7][1]["run_uids"][0]
        assert [run.metadata["start"]["analysis"] for run in derived_runs(derived, calibration)] == ["xrd_calibration"]
