"""Live values across processes (`nanostrain.live_pvs`): a second process serves the live
analyses' values as PVs over Channel Access on loopback (tests/iocs/live_values_ioc.py);
this process reads them as ophyd-async signals, also from plans."""

from __future__ import annotations

import json
import math
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.utils import FailedStatus
from ophyd_async.core import NotConnectedError, SignalR, soft_signal_r_and_setter
from ophyd_async.epics.core import epics_signal_rw
from ophyd_async.plan_stubs import ensure_connected

from nanostrain.callbacks.registry import default_analyses, live_signals
from nanostrain.live_pvs import (
    DEFAULT_PREFIX,
    LONG_STRING_LENGTH,
    LiveValueServer,
    LiveValueServerError,
    live_signal_types,
    remote_live_signals,
    server_interfaces,
)
from nanostrain.plans.calibration import wait_for_geometry

from ..conftest import wait_for

IOC = Path(__file__).resolve().parents[1] / "iocs" / "live_values_ioc.py"
DOC = Path(__file__).resolve().parents[2] / "docs" / "live-pvs.md"
TYPE_NAMES = {float: "DOUBLE", int: "LONG", str: f"CHAR[{LONG_STRING_LENGTH}] (str)"}


class LiveValuesProcess:
    """The server process: `set` makes one of its analyses ``set_live`` a value."""

    def __init__(self, process: subprocess.Popen, log_path: Path, prefix: str):
        self.process, self.log_path, self.prefix = process, log_path, prefix
        self._sets = 0

    def set(self, analysis: str, name: str, value: Any) -> None:
        """Set the value in the server process; return once it has been set there."""
        self.process.stdin.write(json.dumps([analysis, name, value]) + "\n")
        self.process.stdin.flush()
        self._sets += 1
        wait_for(lambda: self.log_path.read_text().count("SET ") >= self._sets, timeout=10, interval=0.01)


@pytest.fixture
def live_values_process(tmp_path) -> Iterator[LiveValuesProcess]:
    """The server process under a fresh prefix, on the session's loopback CA setup (like
    conftest's ``running_ioc``, with a pipe to its stdin)."""
    prefix = f"NSTEST{secrets.token_hex(3)}:LIVE:"
    log_path = tmp_path / "live_values_ioc.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, str(IOC), prefix], stdin=subprocess.PIPE, text=True,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: f"READY {prefix}" in log_path.read_text() or process.poll() is not None, timeout=60)
        assert process.poll() is None, log_path.read_text()
        yield LiveValuesProcess(process, log_path, prefix)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def remote(RE, live_values_process) -> dict[str, SignalR]:
    """Every live signal of `default_analyses()` read from the server process, connected
    on the RunEngine's event loop."""
    signals = remote_live_signals(live_signal_types(default_analyses()), prefix=live_values_process.prefix)
    RE(ensure_connected(*signals.values(), timeout=10))
    return signals


def read(signal: SignalR) -> Any:
    return call_in_bluesky_event_loop(signal.get_value())


def read_once_changed(signal: SignalR, before: Any, timeout_s: float = 10) -> Any:
    """The value of ``signal`` once it is no longer ``before``: a value set in the server
    process reaches its PV a moment after ``set_live`` returns."""
    (value,) = wait_for(lambda: [value for value in [read(signal)] if value != before], timeout_s, interval=0.01)
    return value


def test_live_signal_types_key_the_live_signals_as_the_session_does():
    analyses = default_analyses()
    types = live_signal_types(analyses)
    assert list(types) == list(live_signals(analyses))
    assert types["xrd_reduction_lattice_change_A"] is float
    assert types["xrd_reduction_n_phases"] is int
    assert types["xrd_calibration_geometry"] is str


def test_remote_signals_are_named_as_their_keys_and_read_the_prefixed_pvs():
    signals = remote_live_signals({"xrd_reduction_c_A": float, "xrd_calibration_geometry": str}, prefix="BL:")
    assert {key: signal.name for key, signal in signals.items()} == {
        "xrd_reduction_c_A": "xrd_reduction_c_A", "xrd_calibration_geometry": "xrd_calibration_geometry"}
    assert signals["xrd_reduction_c_A"].source == "ca://BL:xrd_reduction_c_A"
    assert DEFAULT_PREFIX == "NS:LIVE:"


def test_server_names_one_pv_per_signal_under_its_prefix():
    signals = {"a_x": soft_signal_r_and_setter(float, name="a_x")[0],
               "a_n": soft_signal_r_and_setter(int, name="a_n")[0]}
    assert LiveValueServer(signals, prefix="BL:").pv_names == ["BL:a_x", "BL:a_n"]
    assert LiveValueServer(signals).pv_names == ["NS:LIVE:a_x", "NS:LIVE:a_n"]


def test_server_refuses_a_datatype_it_cannot_serve():
    signal, _ = soft_signal_r_and_setter(bool, name="a_flag")
    with pytest.raises(LiveValueServerError, match="'a_flag'.*float, int, str"):
        LiveValueServer({"a_flag": signal})


def test_server_serves_loopback_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("EPICS_CAS_INTF_ADDR_LIST")
    assert server_interfaces() == ["127.0.0.1"]
    monkeypatch.setenv("EPICS_CAS_INTF_ADDR_LIST", "127.0.0.1 10.1.2.3")
    assert server_interfaces() == ["127.0.0.1", "10.1.2.3"]


@pytest.mark.ioc
def test_served_values_start_at_the_signals_initial_values(remote):
    assert read(remote["xrd_reduction_n_phases"]) == 1
    assert read(remote["xrd_reduction_c_A"]) == 0.0
    assert math.isnan(read(remote["sxdm_strain_sigma_strain"]))
    assert read(remote["xrd_calibration_geometry"]) == ""


@pytest.mark.ioc
def test_values_set_in_the_server_process_read_back_exactly(remote, live_values_process):
    geometry = json.dumps({"raw_uid": "u1", "pyfai_config": {"dist": 0.4123456789012345, "note": "é" + "x" * 10_000}})
    live_values_process.set("xrd_reduction", "c_A", 14.208765432109876)
    live_values_process.set("xrd_reduction", "n_phases", 2)
    live_values_process.set("frame_statistics", "total", math.nan)
    live_values_process.set("xrd_calibration", "geometry", geometry)
    assert read_once_changed(remote["xrd_reduction_c_A"], 0.0) == 14.208765432109876
    assert read_once_changed(remote["xrd_reduction_n_phases"], 1) == 2
    assert math.isnan(read_once_changed(remote["frame_statistics_total"], 0.0))
    assert read_once_changed(remote["xrd_calibration_geometry"], "") == geometry


@pytest.mark.ioc
def test_a_monitor_sees_every_value_in_the_order_it_was_set(remote, live_values_process):
    seen: list[float] = []

    def monitor(readings):
        seen.extend(reading["value"] for reading in readings.values())

    signal = remote["xrd_reduction_lattice_change_A"]
    call_in_bluesky_event_loop(_subscribe(signal, monitor))
    wait_for(lambda: seen == [0.0], timeout=10, interval=0.01)  # the monitor's first update: the value now
    for value in (0.01, 0.02, 0.05):
        live_values_process.set("xrd_reduction", "lattice_change_A", value)
    wait_for(lambda: seen[-1:] == [0.05], timeout=10, interval=0.01)
    signal.clear_sub(monitor)
    assert seen == [0.0, 0.01, 0.02, 0.05]


async def _subscribe(signal: SignalR, callback) -> None:
    signal.subscribe_reading(callback)  # needs the RunEngine's event loop running


@pytest.mark.ioc
def test_a_plan_reads_the_served_value_with_bps_rd(RE, remote, live_values_process):
    live_values_process.set("xrd_reduction", "lattice_change_A", 0.031)
    read_once_changed(remote["xrd_reduction_lattice_change_A"], 0.0)
    values = []

    def plan():
        values.append((yield from bps.rd(remote["xrd_reduction_lattice_change_A"])))

    RE(plan())
    assert values == [0.031]


@pytest.mark.ioc
def test_wait_for_geometry_returns_the_geometry_the_server_process_posts_for_its_run(RE, remote, live_values_process):
    config = {"dist": 0.41, "poni1": 0.1024, "poni2": 0.0998, "detector_config": {"pixel": "x" * 8000}}
    live_values_process.set("xrd_calibration", "geometry", json.dumps({"raw_uid": "other", "pyfai_config": {}}))
    later = threading.Timer(0.5, live_values_process.set, (
        "xrd_calibration", "geometry", json.dumps({"raw_uid": "mine", "pyfai_config": config})))
    results = []

    def plan():
        results.append((yield from wait_for_geometry(remote["xrd_calibration_geometry"], "mine", timeout_s=30)))

    later.start()
    RE(plan())
    later.join()
    assert results == [config]


@pytest.mark.ioc
def test_an_unknown_prefix_fails_to_connect_naming_the_pv(RE):
    signals = remote_live_signals({"xrd_reduction_c_A": float}, prefix="NS:NOWHERE:")
    with pytest.raises(NotConnectedError, match=re.escape("ca://NS:NOWHERE:xrd_reduction_c_A")):
        RE(ensure_connected(*signals.values(), timeout=1))


@pytest.mark.ioc
def test_a_second_server_on_a_taken_port_refuses_to_start():
    signal, _ = soft_signal_r_and_setter(float, name="a_x")
    with LiveValueServer({"a_x": signal}, prefix="NSTAKEN1:"):
        with pytest.raises(LiveValueServerError, match="port .* is taken"):
            LiveValueServer({"a_x": signal}, prefix="NSTAKEN2:").start()


@pytest.mark.ioc
def test_clients_cannot_write_a_live_value(RE, remote, live_values_process):
    writer = epics_signal_rw(float, f"{live_values_process.prefix}xrd_reduction_lattice_change_A")
    RE(ensure_connected(writer, timeout=10))
    with pytest.raises(FailedStatus, match=re.escape("CAException(376")):  # 376: ECA_NOWTACCESS
        RE(bps.mv(writer, 1.0))
    assert read(remote["xrd_reduction_lattice_change_A"]) == 0.0


@pytest.mark.ioc
def test_a_string_longer_than_the_waveform_is_not_posted_and_the_pv_keeps_its_value(RE, caplog):
    signal, set_value = soft_signal_r_and_setter(str, initial_value="kept", name="a_text")
    remote_text = remote_live_signals({"a_text": str}, prefix="NSLONG:")["a_text"]
    with LiveValueServer({"a_text": signal}, prefix="NSLONG:"):
        RE(ensure_connected(remote_text, timeout=10))
        set_value("x" * (LONG_STRING_LENGTH + 1))
        wait_for(lambda: "NSLONG:a_text could not be posted" in caplog.text, timeout=10)
        assert read(remote_text) == "kept"
        set_value("y" * LONG_STRING_LENGTH)
        assert read_once_changed(remote_text, "kept") == "y" * LONG_STRING_LENGTH


def _documented_rows() -> list[tuple[str, str, str]]:
    """(PV, type, analysis) of each row of the table in docs/live-pvs.md."""
    rows = re.findall(r"^\| `\{prefix\}(\w+)` \| ([^|]+) \|.*\| `(\w+)` \| [^|]+ \|$", DOC.read_text(), re.M)
    return [(key, kind.strip(), analysis) for key, kind, analysis in rows]


def test_the_pv_table_lists_every_live_value_with_its_type_and_analysis():
    expected = [
        (f"{analysis.analysis}_{name}", TYPE_NAMES[signal.datatype], analysis.analysis)
        for analysis in default_analyses() for name, signal in analysis.signals.items()
    ]
    assert _documented_rows() == expected


@pytest.mark.ioc
def test_a_stopped_server_starts_again_with_the_signals_current_values(RE):
    signal, set_value = soft_signal_r_and_setter(int, initial_value=1, name="a_count")
    remote_count = remote_live_signals({"a_count": int}, prefix="NSAGAIN:")["a_count"]
    server = LiveValueServer({"a_count": signal}, prefix="NSAGAIN:")
    with server:
        RE(ensure_connected(remote_count, timeout=10))
        set_value(2)
        assert read_once_changed(remote_count, 1) == 2
    set_value(3)
    with server:  # the client finds the PV again after its search back-off, ~10 s here
        assert read_once_changed(remote_count, 2, timeout_s=60) == 3
        set_value(4)
        assert read_once_changed(remote_count, 3) == 4
