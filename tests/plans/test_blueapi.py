"""blueapi serves nanostrain's plans and devices (issue 9, item 4): a real ``blueapi
serve`` process on ``profile/blueapi.yaml`` (its sources: `nanostrain.blueapi_env`),
writing into a real ``nanostrain serve`` catalog process. ``GET /plans`` lists every
plan with its parameter schema and ``GET /devices`` every device and live signal; tasks
run over the message bus as Diamond runs it (RabbitMQ's STOMP plugin; ``blueapi
controller run``, which follows the task on the bus; the documents read off the bus with
stomp.py) and over REST alone (no broker); their runs land in the catalog with their
derived runs; a bad task fails with the plan's own message.

blueapi lives in an environment of its own (``.venv-blueapi``, made by scripts/setup.sh;
``NANOSTRAIN_BLUEAPI`` names another ``blueapi`` executable)."""

import inspect
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from nanostrain.beamline import SIM_BEAMLINE
from nanostrain.catalog import catalog_nodes
from nanostrain.plans import registry
from nanostrain.schema.catalog import derived_runs

from ..conftest import ServerProcess, free_port, require, wait_for

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "profile" / "blueapi.yaml"
BLUEAPI = Path(os.environ.get("NANOSTRAIN_BLUEAPI") or ROOT / ".venv-blueapi" / "bin" / "blueapi")
STOMP = ("127.0.0.1", 61613)
EVENTS = "/topic/public.worker.event"  # blueapi's destination for task, progress and data events


def stomp_available() -> bool:
    try:
        with socket.create_connection(STOMP, timeout=2):
            return True
    except OSError:
        return False


class BlueapiProcess:
    """``blueapi -c <config> serve`` on a free port, recording into ``catalog``."""

    def __init__(self, tmp_path: Path, catalog: ServerProcess, stomp: bool):
        config = yaml.safe_load(CONFIG.read_text())
        self.url = f"http://127.0.0.1:{free_port()}"
        config["api"]["url"] = self.url
        if not stomp:
            del config["stomp"]
        self.config = config
        self.config_path = tmp_path / "blueapi.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NANOSTRAIN_")}
        env.update(NANOSTRAIN_CATALOG=catalog.url, NANOSTRAIN_API_KEY=catalog.settings.api_key,
                   NANOSTRAIN_DATA_DIR=str(catalog.settings.data_dir))
        self.log = tmp_path / "blueapi.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [str(BLUEAPI), "-c", str(self.config_path), "serve"],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/plans", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"blueapi did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def get(self, path: str) -> dict:
        response = httpx.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def run_over_rest(self, name: str, params: dict, timeout: float = 300) -> dict:
        """Create a task, start it, poll it until complete; return its final status."""
        response = httpx.post(f"{self.url}/tasks", json={"name": name, "params": params,
                                                         "instrument_session": "cm00001-1"}, timeout=30)
        response.raise_for_status()
        task_id = response.json()["task_id"]
        httpx.put(f"{self.url}/worker/task", json={"task_id": task_id}, timeout=30).raise_for_status()
        deadline = time.monotonic() + timeout
        while not (status := self.get(f"/tasks/{task_id}"))["is_complete"]:
            assert time.monotonic() < deadline, f"{name} did not complete in {timeout} s"
            time.sleep(0.2)
        return status

    def controller_run(self, name: str, params: dict, timeout: float = 300) -> subprocess.CompletedProcess:
        """``blueapi controller run``: submit a task and follow it on the bus to its end."""
        return subprocess.run(
            [str(BLUEAPI), "-c", str(self.config_path), "controller", "run", "-i", "cm00001-1", name,
             json.dumps(params)], capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def bus_messages():
    """Every message on blueapi's event destination, as JSON, while the test runs."""
    import stomp

    messages: list[dict] = []

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame) -> None:
            messages.append(json.loads(frame.body))

    connection = stomp.Connection([STOMP])
    connection.set_listener("", Listener())
    connection.connect("guest", "guest", wait=True)
    connection.subscribe(EVENTS, id="nanostrain-test", ack="auto")
    yield messages
    connection.disconnect()


@pytest.fixture
def catalog(sqlite_settings):
    server = ServerProcess(sqlite_settings).start()
    yield server
    server.stop()


@pytest.fixture
def blueapi_with_bus(tmp_path, catalog):
    require(BLUEAPI.exists(), f"no blueapi at {BLUEAPI}")
    require(stomp_available(), "No STOMP broker on 127.0.0.1:61613 (RabbitMQ's rabbitmq_stomp)")
    service = BlueapiProcess(tmp_path, catalog, stomp=True)
    yield service
    service.stop()


@pytest.fixture
def blueapi_rest_only(tmp_path, catalog):
    require(BLUEAPI.exists(), f"no blueapi at {BLUEAPI}")
    service = BlueapiProcess(tmp_path, catalog, stomp=False)
    yield service
    service.stop()


def plan_parameters(plan) -> set[str]:
    return {p.name for p in inspect.signature(plan).parameters.values() if p.kind is not p.VAR_KEYWORD}


@pytest.mark.slow
@pytest.mark.server
def test_blueapi_lists_every_plan_and_device_and_runs_tasks_over_the_bus(blueapi_with_bus, bus_messages, catalog):
    service = blueapi_with_bus
    plans = {plan["name"]: plan for plan in service.get("/plans")["plans"]}
    assert set(plans) == set(registry())
    for name, plan in registry().items():
        schema = plans[name]["schema"]
        assert set(schema["properties"]) == plan_parameters(plan), name
        assert set(schema["required"]) == {p for p in plan_parameters(plan)
                                           if inspect.signature(plan).parameters[p].default is inspect.Parameter.empty}
    # devices by name, in the parameter schema too: a Movable's field lists what can move
    movables = plans["operando_xrd"]["schema"]["properties"]["cycler"]["enum"]
    assert {"cycler", "sx", "np_theta"} <= set(movables) and "xrd" not in movables
    devices = {device["name"] for device in service.get("/devices")["devices"]}
    assert devices >= set(SIM_BEAMLINE.factories) | {"xrd_reduction_lattice_change_A", "xrd_calibration_geometry"}

    tasks = {
        "alignment_scan": {"cam": "cam", "stage": "sx", "start_mm": -1.0, "stop_mm": 1.0, "num": 5,
                           "monitor": "i0", "exposure_s": 0.01, "sample": {"name": "pinhole"}},
        "operando_xrd": {"cycler": "cycler", "detector": "xrd",
                         "protocol": [{"mode": "CC_CHARGE", "rate_mA_g": 200.0, "v_max": 4.3}],
                         "active_mass_g": 6.16e-3, "cadence_mAh_g": 40.0, "exposure_s": 0.1,
                         "feedback": "xrd_reduction_lattice_change_A", "feedback_threshold": 0.03},
    }
    uids = {}
    for name, params in tasks.items():
        if name == "alignment_scan":  # blueapi's own client follows the task on the bus to its end
            ran = service.controller_run(name, params)
            assert ran.returncode == 0, (name, ran.stdout[-2000:], ran.stderr[-2000:])
        else:
            # over REST: after an operando_xrd task `blueapi controller run` (blueapi 1.20's
            # client) spins at 100 % CPU for ~290 s before it returns, past its timeout on a
            # loaded machine (seen in CI); the documents are still read off the bus below
            status = service.run_over_rest(name, params)
            assert not status["errors"], status

        def on_the_bus():
            documents = [(m["name"], m["doc"]) for m in bus_messages if set(m) >= {"name", "doc"}]
            starts = [doc for kind, doc in documents if kind == "start" and doc.get("plan_name") == name]
            stops = [doc for kind, doc in documents if kind == "stop" and starts
                     and doc["run_start"] == starts[0]["uid"]]
            return (starts, stops) if stops else None

        starts, stops = wait_for(on_the_bus, timeout=60)
        assert len(starts) == 1, f"{name}: the bus carried {len(starts)} start documents"
        assert stops[0]["exit_status"] == "success"
        uids[name] = starts[0]["uid"]

    raw, derived = catalog_nodes(catalog.client())
    for name, uid in uids.items():
        start = raw[uid].metadata["start"]
        assert start["plan_name"] == name and start["instrument_session"] == "cm00001-1"
    assert {r.metadata["start"]["analysis"] for r in derived_runs(derived, uids["alignment_scan"])} == {"frame_statistics"}
    (reduction,) = (r for r in derived_runs(derived, uids["operando_xrd"])
                    if r.metadata["start"]["analysis"] == "xrd_reduction")
    assert reduction.metadata["stop"]["exit_status"] == "success"
    frames = len(raw[uids["operando_xrd"]]["primary"]["cycler-potential"].read())
    assert frames >= 5 and reduction["xrd"].read().sizes["time"] == frames


@pytest.mark.slow
@pytest.mark.server
def test_blueapi_without_a_bus_calibrates_and_refuses_a_bad_task(blueapi_rest_only, catalog, tmp_path):
    service = blueapi_rest_only
    bad = service.run_over_rest("alignment_scan", {"cam": "cam", "stage": "sx", "start_mm": -1.0,
                                                   "stop_mm": 1.0, "num": 1})
    assert bad["outcome"]["outcome"] == "error" or bad["errors"], bad
    assert any("num must be an integer between 2" in error for error in bad["errors"]), bad["errors"]

    mounted = service.run_over_rest("mount_sample", {"device": "xrd", "sample": "CeO2"})
    assert not mounted["errors"], mounted
    poni = tmp_path / "xrd.poni"
    calibrated = service.run_over_rest("calibrate_xrd", {"detector": "xrd", "poni_path": str(poni),
                                                         "refined_geometry": "xrd_calibration_geometry"})
    assert not calibrated["errors"], calibrated
    uid = calibrated["outcome"]["result"]
    assert poni.read_text().startswith("#") and "Distance" in poni.read_text()
    raw, derived = catalog_nodes(catalog.client())
    assert raw[uid].metadata["stop"]["exit_status"] == "success"
    (calibration,) = derived_runs(derived, uid)
    assert calibration.metadata["start"]["analysis"] == "xrd_calibration"


@pytest.mark.slow
def test_blueapi_plans_carry_the_beam_suspenders_and_record_a_dump(tmp_path, monkeypatch):
    """blueapi's RunEngine has no suspenders of ours: each plan of `nanostrain.blueapi_env`
    installs the beam's for as long as it runs. In this process (blueapi's own process
    runs the same module): the devices as blueapi's deviceManager builds them, a RunEngine
    as blueapi's, a beam dump during the scan: the run is suspended, records the gap and
    completes; the suspenders are removed afterwards."""
    import bluesky.plan_stubs as bps
    from bluesky import RunEngine

    from nanostrain import blueapi_env
    from nanostrain.plans.suspenders import BEAM_GAPS_STREAM

    for name in [name for name in os.environ if name.startswith("NANOSTRAIN_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("NANOSTRAIN_DATA_DIR", str(tmp_path / "data"))
    blueapi_env.recording.cache_clear()
    RE = RunEngine({})  # first, as in blueapi: the devices connect on its event loop
    result = blueapi_env.devices.build_and_connect()
    try:
        assert not result.build_errors and not result.connection_errors
        assert len(blueapi_env.SUSPENDERS) == 2
        ring = result.devices["ring_current"]
        events = []

        def dump_at_the_second_point(name, doc):
            if name == "event":
                events.append(doc)
                if len(events) == 2:
                    ring.dump()
                    RE.loop.call_later(1.0, ring.refill)

        RE(bps.mv(result.devices["cycler"].time_scale, 1.0))
        (uid,) = RE(blueapi_env.alignment_scan(result.devices["cam"], result.devices["sx"], -1.0, 1.0, 5),
                    dump_at_the_second_point)
        assert not RE.suspenders  # removed with the plan
        run = blueapi_env.recording().catalog[uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        gaps = run[BEAM_GAPS_STREAM].read()
        # the beam returns 1 s after the dump, so the third point comes >= 1 s after the
        # second; the recorded gap (suspension to resumption) lies inside that interval
        between_points = events[2]["time"] - events[1]["time"]
        assert between_points >= 1.0
        assert len(gaps["beam_gap-duration_s"]) == 1 and 0 < float(gaps["beam_gap-duration_s"][0]) <= between_points
        assert len(run["primary"].read()["sx"]) == 5
    finally:
        blueapi_env.recording().close()
        blueapi_env.recording.cache_clear()
