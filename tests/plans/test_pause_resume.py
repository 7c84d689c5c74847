"""Pause, resume and abort in every technique, with a real RunEngine and the simulated
beamline, the live analyses subscribed as a session subscribes them.

For each plan: a deferred pause (it lands at the next checkpoint) then resume; an
immediate pause then resume; an immediate pause then abort, after which the same plan
runs again. Each resumed run ends in success with every event of the uninterrupted run
(a rewound point may be recorded twice, as bluesky replays from the last checkpoint);
every derived run the analyses opened is closed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.preprocessors import plan_mutator
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.utils import Msg, RunEngineInterrupted

import bluesky.plan_stubs as bps

from nanostrain.beamline import connect_devices, detector_path_provider, make_devices
from nanostrain.callbacks.derived import GuardedCallback
from nanostrain.callbacks.registry import default_analyses, live_signals
from nanostrain.devices.txm import SimTxm
from nanostrain.devices.xrd import CALIBRANT
from nanostrain.plans.alignment import alignment_scan
from nanostrain.plans.calibration import calibrate_xrd
from nanostrain.plans.cycling import cycle_cell, gitt, operando_xrd
from nanostrain.plans.samples import mount_sample
from nanostrain.plans.sxdm import find_bragg_peak, sxdm_rocking_raster, xrf_map
from nanostrain.plans.txm import energy_calibration, txm_xanes_2d, txm_xanes_tomo
from nanostrain.plans.xas import xas_scan
from nanostrain.schema.cycler import CyclerState

from ..conftest import wait_for

pytestmark = pytest.mark.slow

MASS_G = 6.16e-3
ENERGIES = list(np.arange(8340.0, 8359.0, 3.0))  # 7 energies, the fewest the analysis takes
REST = [{"mode": "REST", "duration_s": 3600.0}]  # an hour at rest: the cell's charge does not matter
PULSES = [{"mode": "CC_CHARGE", "rate_mA_g": 20.0, "duration_s": 600.0}, {"mode": "REST", "duration_s": 1200.0}] * 2


class Beamline:
    """The simulated beamline (a small TXM), a RunEngine, the live analyses, the documents."""

    def __init__(self, tmp_path) -> None:
        self.RE = RunEngine({})
        self.devices = make_devices(detector_dir=tmp_path / "detectors")
        self.devices["txm"] = SimTxm(detector_path_provider(tmp_path / "txm"), shape=(16, 16), pixel_size_um=0.3,
                                     name="txm")
        connect_devices({"txm": self.devices["txm"]})
        self.RE(bps.mv(self.devices["cycler"].time_scale, 1800.0))
        self.poni = tmp_path / "ceo2.poni"
        self.raw: list[tuple[str, dict]] = []
        self.derived: list[tuple[str, dict]] = []
        self.RE.subscribe(lambda name, doc: self.raw.append((name, doc)))
        self.analyses = default_analyses()
        for analysis in self.analyses:
            analysis.subscribe(lambda name, doc: self.derived.append((name, doc)))
            self.RE.subscribe(GuardedCallback(analysis))
        self.signals = live_signals(self.analyses)

    def run(self, plan, pause: Pause | None = None) -> list:
        """Run ``plan`` (with ``pause`` inserted); return its documents."""
        start = len(self.raw)
        self.RE(plan if pause is None else pause.into(plan))
        return self.raw[start:]

    def value(self, signal):
        return call_in_bluesky_event_loop(signal.get_value())


@pytest.fixture(scope="module")
def beamline(tmp_path_factory):
    return Beamline(tmp_path_factory.mktemp("beamline"))


def calibration(b: Beamline):
    b.RE(mount_sample(b.devices["xrd"], CALIBRANT))
    return calibrate_xrd(b.devices["xrd"], str(b.poni), b.signals["xrd_calibration_geometry"], exposure_s=0.1,
                         timeout_s=60.0)


#: Every technique's plans, small; and the message that starts an exposure: (command,
#: object name). An immediate pause comes right after its 2nd one (mid-exposure), a
#: deferred one after the 2nd event.
PLANS: dict[str, tuple[Callable[[Beamline], object], tuple[str, str]]] = {
    "alignment_scan": (lambda b: alignment_scan(b.devices["cam"], b.devices["sx"], -1.0, 1.0, 9,
                                                monitor=b.devices["i0"]), ("trigger", "cam")),
    "operando_xrd": (lambda b: operando_xrd(b.devices["cycler"], b.devices["xrd"], REST, active_mass_g=MASS_G,
                                            cadence_s=600.0, exposure_s=0.1), ("trigger", "xrd")),
    "gitt": (lambda b: gitt(b.devices["cycler"], active_mass_g=MASS_G, protocol=PULSES), ("trigger", "cycler")),
    "cycle_cell": (lambda b: cycle_cell(b.devices["cycler"], PULSES, active_mass_g=MASS_G), ("trigger", "cycler")),
    "calibrate_xrd": (calibration, ("trigger", "xrd")),
    "sxdm_step_raster": (lambda b: sxdm_rocking_raster(b.devices["merlin"], b.devices["np_stage"], b.devices["np_theta"],
                                                       (-0.2, 0.2), (-0.2, 0.2), 0.1, [6.0, 6.1], progress=False),
                         ("trigger", "merlin")),
    "sxdm_fly_raster": (lambda b: sxdm_rocking_raster(b.devices["merlin"], b.devices["np_stage"], b.devices["np_theta"],
                                                      (-0.2, 0.2), (-0.2, 0.2), 0.1, [6.0, 6.1], mode="fly",
                                                      progress=False), ("kickoff", "merlin")),
    "find_bragg_peak": (lambda b: find_bragg_peak(b.devices["merlin"], b.devices["np_theta"], [6.25, 6.3, 6.35, 6.4, 6.45],
                                                  move=False), ("trigger", "merlin")),
    "xrf_map": (lambda b: xrf_map(b.devices["np_xrf"], b.devices["np_stage"], (-1.0, 1.0), (-1.0, 1.0), 0.5),
                ("trigger", "np_xrf")),
    "txm_xanes_2d": (lambda b: txm_xanes_2d(b.devices["txm"], ENERGIES, n_flats=1, n_darks=1), ("trigger", "txm-camera")),
    "txm_xanes_tomo": (lambda b: txm_xanes_tomo(b.devices["txm"], ENERGIES, list(np.linspace(0.0, 180.0, 8)),
                                                      n_flats=1, n_darks=1),
                       ("trigger", "txm-camera")),
    "energy_calibration": (lambda b: energy_calibration(b.devices["txm"], list(np.arange(8318.0, 8348.5, 2.0)),
                                                        n_darks=1, apply=False), ("trigger", "txm-camera")),
    "xas_scan": (lambda b: xas_scan(b.devices["dcm"], b.devices["xas_ic"],
                                    [{"space": "E", "start": -20.0, "stop": 20.0, "step": 5.0, "dwell_s": 0.1}]),
                 ("trigger", "xas_ic")),
}


def stream_of(docs: list) -> dict[str, str]:
    return {doc["uid"]: doc["name"] for name, doc in docs if name == "descriptor"}


def seq_nums(docs: list) -> dict[str, Counter]:
    """Per stream, how often each event sequence number was recorded (events and pages)."""
    streams, counts = stream_of(docs), {}
    for name, doc in docs:
        if name == "event":
            counts.setdefault(streams[doc["descriptor"]], Counter())[doc["seq_num"]] += 1
        elif name == "event_page":
            counts.setdefault(streams[doc["descriptor"]], Counter()).update(doc["seq_num"])
    return counts


def stop_of(docs: list) -> dict:
    (stop,) = [doc for name, doc in docs if name == "stop"]
    return stop


class Pause:
    """A pause request put into a plan as bluesky's ``pause`` message, right after the
    ``n``-th message ``command`` on the object named ``obj`` (a ``trigger``: the pause
    comes mid-exposure; ``save``, ``obj`` None: after an event is recorded).
    ``defer``: pause at the next checkpoint instead of at once."""

    def __init__(self, command: str, obj: str | None, n: int, defer: bool = False) -> None:
        self.command, self.obj, self.n, self.defer = command, obj, n, defer

    def into(self, plan):
        seen = {"count": 0}

        def insert_after(msg):
            if msg.command != self.command or (self.obj is not None and getattr(msg.obj, "name", None) != self.obj):
                return None, None
            seen["count"] += 1
            if seen["count"] != self.n:
                return None, None

            def then_pause(response=None):
                yield Msg("pause", None, defer=self.defer)

            return None, then_pause()

        return plan_mutator(plan, insert_after)


def assert_complete(docs: list, reference: dict[str, Counter], exact: bool) -> None:
    """The run succeeded and every stream holds the sequence numbers 1..N, N as in
    ``reference`` (each once if ``exact``; bluesky may record a rewound point twice).
    A cycling run's streams follow the channel's clock, so only their 1..N is checked
    (the echem points by the log indices, `assert_every_echem_point_once`)."""
    assert stop_of(docs)["exit_status"] == "success"
    counts = seq_nums(docs)
    cycling = "echem" in reference
    for stream, numbers in reference.items():
        expected = range(1, max(counts[stream]) + 1) if cycling else sorted(numbers)
        assert sorted(set(counts[stream])) == list(expected), stream
        if exact:
            assert max(counts[stream].values()) == 1, stream


def assert_every_echem_point_once(docs: list) -> None:
    streams = stream_of(docs)
    indices = [doc["data"]["cycler-log_index"] for name, doc in docs
               if name == "event" and streams[doc["descriptor"]] == "echem"]
    assert indices == list(range(indices[0], indices[0] + len(indices)))


def assert_derived_runs_closed(b: Beamline) -> None:
    starts = {doc["uid"] for name, doc in b.derived if name == "start"}
    stops = {doc["run_start"] for name, doc in b.derived if name == "stop"}
    assert starts == stops


@pytest.mark.parametrize("technique", list(PLANS))
def test_pause_resume_and_abort(beamline, technique):
    make_plan, (command, detector) = PLANS[technique]
    n = 1 if technique == "calibrate_xrd" else 2  # calibration takes one frame
    cycling = technique in ("operando_xrd", "gitt", "cycle_cell")
    b = beamline
    first = b.run(make_plan(b))
    assert stop_of(first)["exit_status"] == "success"
    reference = seq_nums(first)

    # a deferred pause lands at the next checkpoint; resume goes on with nothing twice
    start = len(b.raw)
    with pytest.raises(RunEngineInterrupted):
        b.run(make_plan(b), Pause("save", None, n, defer=True))
    assert b.RE.state == "paused"
    b.RE.resume()
    assert_complete(b.raw[start:], reference, exact=True)

    # an immediate pause mid-exposure; a cycler's step goes on while the plan is paused
    start = len(b.raw)
    with pytest.raises(RunEngineInterrupted):
        b.run(make_plan(b), Pause(command, detector, n))
    assert b.RE.state == "paused"
    if cycling:
        cycler = b.devices["cycler"]
        assert b.value(cycler.state) == CyclerState.RUNNING
        logged = cycler.engine.log_count
        wait_for(lambda: cycler.engine.log_count > logged + 3)  # the channel logs on while the plan waits
    b.RE.resume()
    assert_complete(b.raw[start:], reference, exact=cycling)
    if cycling:
        assert_every_echem_point_once(b.raw[start:])

    # an immediate pause mid-exposure, then abort: the run ends aborted, the plan runs again
    start = len(b.raw)
    with pytest.raises(RunEngineInterrupted):
        b.run(make_plan(b), Pause(command, detector, n))
    b.RE.abort("test")
    assert stop_of(b.raw[start:])["exit_status"] == "abort"
    if cycling:
        assert b.value(b.devices["cycler"].state) != CyclerState.RUNNING  # an aborted plan stops its step
    again = b.run(make_plan(b))
    assert_complete(again, reference, exact=True)
    assert_derived_runs_closed(b)
