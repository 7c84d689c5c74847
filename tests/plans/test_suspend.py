"""Beam dumps suspend the plans as bluesky does it; operando XRD cycles on through them.

Real RunEngine and simulated beamline; the beam dump goes through the simulated ring
current (`SimRingCurrent.dump` / `refill`) that the installed suspenders watch.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
import pytest
from bluesky import RunEngine

from nanostrain.analysis.electrochem import CyclingAccumulator
from nanostrain.beamline import connect_devices, make_devices
from nanostrain.devices.beam import EpicsRingCurrent, EpicsShutter
from nanostrain.plans.cycling import operando_xrd
from nanostrain.plans.protocols import galvanostatic
from nanostrain.plans.suspenders import BEAM_GAPS_STREAM, beam_suspenders
from nanostrain.plans.validation import PlanArgumentError
from nanostrain.schema.cycler import CYCLER_LOG_COLUMNS, CYCLER_LOG_FIELDS

from ..conftest import running_ioc

REPO = Path(__file__).resolve().parents[2]
MASS_G = 6.16e-3
GAP_S = 1.5  # wall seconds the beam stays dumped


class Documents:
    """The documents of the runs, by stream."""

    def __init__(self) -> None:
        self.docs: list[tuple[str, dict]] = []
        self.streams: dict[str, str] = {}

    def __call__(self, name: str, doc: dict) -> None:
        self.docs.append((name, doc))
        if name == "descriptor":
            self.streams[doc["uid"]] = doc["name"]

    def events(self, stream: str) -> list[dict]:
        return [doc for name, doc in self.docs if name == "event" and self.streams[doc["descriptor"]] == stream]


@pytest.fixture(scope="module")
def beamline(tmp_path_factory):
    RE = RunEngine({})
    devices = make_devices(detector_dir=tmp_path_factory.mktemp("detectors"))
    for suspender in beam_suspenders(devices["ring_current"], devices["shutter"]):
        RE.install_suspender(suspender)
    return RE, devices


def dump_at_frame(RE, ring, frame: int, gap_s: float):
    """A callback that dumps the beam when the ``frame``-th frame is recorded and
    refills it ``gap_s`` wall seconds later (on the RunEngine's loop, where the
    suspenders listen)."""
    seen = Documents()

    def callback(name, doc):
        seen(name, doc)
        if name == "event" and seen.streams[doc["descriptor"]] == "primary" and len(seen.events("primary")) == frame:
            ring.dump()
            RE.loop.call_later(gap_s, ring.refill)

    return callback


@pytest.mark.slow
def test_a_beam_dump_in_operando_xrd_keeps_cycling_records_the_gap_and_loses_no_echem_point(beamline):
    RE, devices = beamline
    cycler, ring = devices["cycler"], devices["ring_current"]
    RE(bps.mv(cycler.time_scale, 1200.0))  # one C/1 charge in ~6 wall s
    documents = Documents()
    first_log_index = cycler.engine.log_count

    RE(operando_xrd(cycler, devices["xrd"], galvanostatic(200.0)[:1], active_mass_g=MASS_G, cadence_s=240.0,
                    exposure_s=0.1, monitor=devices["i0"], min_flux=1e6),
       [documents, dump_at_frame(RE, ring, frame=3, gap_s=GAP_S)])

    (gap,) = documents.events(BEAM_GAPS_STREAM)
    start, end = gap["data"]["beam_gap-start"], gap["data"]["beam_gap-end"]
    assert gap["data"]["beam_gap-reason"] == "ring current below 10 mA (beam dump)"
    assert end > start
    frames = [event["time"] for event in documents.events("primary")]
    echem = documents.events("echem")
    echem_times = np.array([event["timestamps"]["cycler-potential"] for event in echem])
    # no frame while the beam was down; frames before and after it
    assert not any(start < t < end for t in frames)
    assert sum(t <= start for t in frames) >= 3 and sum(t >= end for t in frames) >= 1
    # the cell kept cycling: the channel logged points during the gap, recorded afterwards
    in_gap = (echem_times > start) & (echem_times < end)
    assert in_gap.sum() >= 5
    potential = np.array([event["data"]["cycler-potential"] for event in echem])
    assert potential[in_gap].max() > potential[in_gap].min()
    # every sample the channel logged during the run is in the run, once, in order
    indices = [event["data"]["cycler-log_index"] for event in echem]
    assert indices == list(range(first_log_index, cycler.engine.log_count))
    rows = np.array(cycler.engine.log_readbacks()["log_samples"]).reshape(-1, len(CYCLER_LOG_COLUMNS))
    logged = rows[np.isin(rows[:, 0], indices)]
    for i, field in enumerate(CYCLER_LOG_FIELDS[:-1], start=2):  # the numbers; the state compared below
        np.testing.assert_array_equal([event["data"][f"cycler-{field}"] for event in echem], logged[:, i])
    assert echem[-1]["data"]["cycler-state"] == "LIMIT_REACHED"
    # the electrochemistry analysis over the run's points equals the one over the channel's log
    def charge_mAh_g(readings) -> float:
        accumulator = CyclingAccumulator(MASS_G)
        for reading in readings:
            accumulator.add(*(reading[f"cycler-{field}"] for field in
                              ("step_time", "step_index", "cycle_index", "potential", "current")))
        return accumulator.result().capacities.charge[0]

    from_log = [{f"cycler-{name}": value for name, value in zip(CYCLER_LOG_COLUMNS, row, strict=True)} for row in logged]
    assert charge_mAh_g(event["data"] for event in echem) == charge_mAh_g(from_log)
    assert charge_mAh_g(from_log) == pytest.approx(echem[-1]["data"]["cycler-step_capacity"] / MASS_G, rel=0.02)


@pytest.mark.slow
def test_a_closed_shutter_suspends_a_plan_between_runs_without_recording_a_gap(beamline):
    RE, devices = beamline
    shutter = devices["shutter"]
    documents = Documents()

    def plan():
        yield from bps.checkpoint()
        shutter.close()  # on the RunEngine's loop, as a shutter's monitor update arrives
        RE.loop.call_later(0.5, shutter.open)
        yield from bps.sleep(0.1)
        yield from bps.checkpoint()

    RE(plan(), documents)

    assert documents.docs == []  # no run open: the gap is no run's


def test_suspender_thresholds_are_checked():
    with pytest.raises(PlanArgumentError, match="min_ring_current_mA"):
        beam_suspenders(ring_current=object(), min_ring_current_mA=float("nan"))
    with pytest.raises(PlanArgumentError, match="resume_ring_current_mA"):
        beam_suspenders(ring_current=object(), min_ring_current_mA=50.0, resume_ring_current_mA=20.0)
    with pytest.raises(PlanArgumentError, match="needs ring_current, shutter"):
        beam_suspenders()


# --------------------------------------------------------------------------------------
# The EPICS classes over Channel Access, against tests/iocs/beam_ioc.py
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def beam_ioc(tmp_path_factory):
    prefix = f"NSTEST{secrets.token_hex(4)}:BEAM:"
    command = [sys.executable, "-m", "tests.iocs.beam_ioc", "--prefix", prefix]
    with running_ioc(command, prefix, tmp_path_factory.mktemp("beam_ioc") / "ioc.log", cwd=REPO):
        yield prefix


@pytest.mark.ioc
def test_a_dump_and_a_closed_shutter_over_ca_suspend_a_run_and_are_recorded(beam_ioc):
    from ophyd_async.epics.core import epics_signal_rw

    RE = RunEngine({})
    ring = EpicsRingCurrent(beam_ioc + "Current-I", name="ring_current")
    shutter = EpicsShutter(beam_ioc + "Open-Sts", name="shutter")
    machine = {"current": epics_signal_rw(float, beam_ioc + "Current-I"),
               "open": epics_signal_rw(bool, beam_ioc + "Open-Sts")}  # what the machine writes
    connect_devices({"ring_current": ring, "shutter": shutter, **machine})
    for suspender in beam_suspenders(ring, shutter, min_ring_current_mA=100.0, resume_ring_current_mA=300.0):
        RE.install_suspender(suspender)
    documents = Documents()

    def put_later(signal, value, delay_s):
        RE.loop.call_later(delay_s, lambda: asyncio.ensure_future(signal.set(value)))

    def plan():
        @bpp.run_decorator()
        def inner():
            for point in range(8):
                yield from bps.checkpoint()
                if point == 2:  # a dump: 0 mA, refilled to 350 mA (above the resume threshold)
                    put_later(machine["current"], 0.0, 0.0)
                    put_later(machine["current"], 350.0, 0.5)
                if point == 5:
                    put_later(machine["open"], False, 0.0)
                    put_later(machine["open"], True, 0.5)
                yield from bps.trigger_and_read([ring, shutter])
                yield from bps.sleep(0.2)

        return (yield from inner())

    RE(plan(), documents)

    gaps = documents.events(BEAM_GAPS_STREAM)
    assert [gap["data"]["beam_gap-reason"] for gap in gaps] == [
        "ring current below 100 mA (beam dump)", "shutter closed"]
    primary = documents.events("primary")
    for gap in gaps:  # no point recorded while the beam was off
        assert not any(gap["data"]["beam_gap-start"] < event["time"] < gap["data"]["beam_gap-end"] for event in primary)
    assert sorted(event["seq_num"] for event in primary)[-1] == 8
    assert all(event["data"]["ring_current-current"] >= 300.0 for event in primary)  # 400 mA, then 350 mA
