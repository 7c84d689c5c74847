"""The battery cycler: engine known answers, the simulated twin in a RunEngine, and the
EPICS class against a real soft IOC over Channel Access."""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import sys
import time
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import bluesky.preprocessors as bpp
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.utils import FailedStatus

from nanostrain.beamline import connect_devices
from nanostrain.devices.cycler import (
    PROGRESS_INTERVAL_S,
    CyclerFaultError,
    CyclerLog,
    CyclerLogOverrunError,
    EpicsCycler,
    SimCycler,
)
from nanostrain.schema.cycler import (
    CYCLER_LOG_COLUMNS,
    CYCLER_LOG_PVS,
    CYCLER_PVS,
    LOG_LENGTH,
    CyclerMode,
    CyclerState,
    CyclerStep,
)
from nanostrain.sim.cathode import CathodeParticle
from nanostrain.sim.cycler_engine import ACTIVE_MASS_G, CyclerEngine, WallClock

from ..conftest import running_ioc

MASS_G = ACTIVE_MASS_G
FAST_MA = 1000.0 * MASS_G  # 1000 mA/g: a charge to 4.5 V takes ~850 simulated s
READING_KEYS = {"potential", "current", "step_capacity", "total_charge", "step_time", "step_index",
                "cycle_index", "state"}
CONFIG_KEYS = {"mode", "current_setpoint", "voltage_min", "voltage_max", "duration", "current_limit",
               "mounted_sample"}
REPO = Path(__file__).resolve().parents[2]


def new_engine() -> CyclerEngine:
    return CyclerEngine(CathodeParticle("NC91", "PC"), MASS_G)


def run_until_done(engine: CyclerEngine, chunk_s: float = 60.0) -> None:
    while engine.state is CyclerState.RUNNING:
        engine.advance(chunk_s)


def run(coro):
    """Await ``coro`` in the bluesky event loop (where the devices live)."""
    return call_in_bluesky_event_loop(coro)


async def set_and_wait(device, value) -> None:
    """Set ``device`` to ``value`` and wait for the status (in the event loop)."""
    await device.set(value)


async def wait_for_state(cycler, state: CyclerState) -> None:
    """Poll ``cycler.state`` until it is ``state``."""
    while await cycler.state.get_value() != state:
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------
def test_constant_current_for_a_time_passes_exactly_i_t():
    engine = new_engine()
    current_mA = 100.0 * MASS_G
    engine.start(CyclerStep(CyclerMode.CC_CHARGE, current_mA, v_max=4.8, duration_s=1800.0))

    advanced = engine.advance(1e4)

    assert advanced == 1800.0  # returns at the end of the step
    assert engine.state is CyclerState.TIME_REACHED
    assert engine.step_time_s == 1800.0 and engine.time_s == 1800.0
    assert engine.step_capacity_mAh == pytest.approx(current_mA * 1800.0 / 3600.0, rel=1e-12)
    assert engine.total_charge_mAh == pytest.approx(current_mA * 0.5, rel=1e-12)
    assert engine.specific_capacity_mAh_g == pytest.approx(50.0, rel=1e-12)
    assert engine.particle.capacity_mAh_g == pytest.approx(50.0, rel=1e-12)  # mA -> mA/g


def test_charge_ends_on_v_max_with_limit_reached_then_relaxes():
    engine = new_engine()
    engine.start(CyclerStep("CC_CHARGE", 200.0 * MASS_G, v_max=4.5))
    assert engine.state is CyclerState.RUNNING and engine.current_mA == pytest.approx(200.0 * MASS_G)

    run_until_done(engine)

    assert engine.state is CyclerState.LIMIT_REACHED
    assert "v_max 4.5 V reached" in engine.message
    end_of_step_V = engine.potential_V
    assert 4.5 <= end_of_step_V < 4.55  # the last sample, under current
    assert 200.0 < engine.specific_capacity_mAh_g < 260.0
    engine.advance(600.0)
    assert engine.current_mA == 0.0 and engine.potential_V < end_of_step_V - 0.01  # open circuit
    assert engine.step_time_s == pytest.approx(engine.specific_capacity_mAh_g * 3600.0 / 200.0)


def test_discharge_ends_on_v_min():
    engine = new_engine()
    engine.start(CyclerStep("CC_CHARGE", FAST_MA, duration_s=300.0))
    run_until_done(engine)
    engine.start(CyclerStep("CC_DISCHARGE", FAST_MA, v_min=3.0))

    run_until_done(engine)

    assert engine.state is CyclerState.LIMIT_REACHED and engine.potential_V <= 3.0
    assert engine.current_mA == pytest.approx(-FAST_MA)
    assert engine.step_capacity_mAh < 0.0


def test_a_cycle_starts_at_each_charge_after_a_discharge():
    engine = new_engine()
    charge = CyclerStep("CC_CHARGE", FAST_MA, duration_s=60.0)
    discharge = CyclerStep("CC_DISCHARGE", FAST_MA, v_min=2.0, duration_s=30.0)
    rest = CyclerStep("REST", duration_s=60.0)
    cycles = []
    for step in (charge, rest, discharge, rest, charge, charge, discharge, charge):
        engine.start(step)
        run_until_done(engine)
        cycles.append(engine.cycle_index)

    assert cycles == [0, 0, 0, 0, 1, 1, 1, 2]
    assert engine.step_index == 8
    assert engine.total_charge_mAh == pytest.approx(FAST_MA * (4 * 60.0 - 2 * 30.0) / 3600.0, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "CC_CHARGE", "current_mA": -1.0}, "magnitude"),
        ({"mode": "CC_CHARGE", "current_mA": 1.0, "v_min": 4.0, "v_max": 3.9}, "must be below"),
        ({"mode": "CC_CHARGE", "current_mA": 1.0, "v_max": 4.9}, "safe window"),
        ({"mode": "CC_DISCHARGE", "current_mA": 1.0, "v_min": 1.9}, "safe window"),
        ({"mode": "CC_CHARGE", "current_mA": 0.0}, "needs a current"),
        ({"mode": "CC_CHARGE", "current_mA": math.nan}, "finite"),
        ({"mode": "CC_CHARGE", "current_mA": 1.0, "duration_s": -1.0}, "duration_s"),
        ({"mode": "REST", "current_mA": 1.0, "duration_s": 10.0}, "carries no current"),
        ({"mode": "OCV"}, "needs a duration"),
        ({"mode": "CV"}, "mode must be one of"),
    ],
)
def test_bad_steps_are_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CyclerStep(**kwargs)


def test_current_above_the_safety_maximum_is_refused_before_anything_changes():
    engine = new_engine()
    too_much = CyclerStep("CC_CHARGE", 1.01 * 1400.0 * MASS_G)

    with pytest.raises(ValueError, match="safety maximum"):
        engine.start(too_much)

    assert engine.state is CyclerState.IDLE and engine.step_index == 0
    assert engine.particle.capacity_mAh_g == 0.0
    engine.start_setpoints("CC_CHARGE", too_much.current_mA, 2.7, 4.5, 0.0)  # the channel's path
    assert engine.state is CyclerState.FAULT and "safety maximum" in engine.message
    engine.start_setpoints("REST", 0.0, 2.7, 4.5, 0.0)
    assert engine.state is CyclerState.FAULT and "needs a duration" in engine.message


def test_a_discharge_that_cannot_reach_its_limit_faults_when_the_cathode_is_full():
    engine = new_engine()  # pristine: x = 1, nothing left to insert
    engine.start(CyclerStep("CC_DISCHARGE", 1e-4, v_min=2.0))

    engine.advance(100.0)

    assert engine.state is CyclerState.FAULT and "fully lithiated" in engine.message


def test_stop_ends_the_step_idle():
    engine = new_engine()
    engine.start(CyclerStep("OCV", duration_s=1e6))
    engine.advance(100.0)

    engine.stop()

    assert engine.state is CyclerState.IDLE and engine.step_time_s == 100.0
    assert "stopped" in engine.message


def test_the_log_samples_each_advance_of_a_running_step_with_its_readbacks_and_wall_time():
    wall = iter(range(1000, 2000))
    engine = CyclerEngine(CathodeParticle("NC91", "PC"), MASS_G, clock=lambda: float(next(wall)))
    engine.start(CyclerStep("CC_CHARGE", 1.0, duration_s=300.0))
    engine.advance(100.0)
    engine.advance(100.0)
    after_two = engine.readbacks()
    run_until_done(engine, chunk_s=150.0)  # 100 s more, then the step ends on its duration
    engine.advance(500.0)  # idle: nothing logged

    rows = np.array(engine.log_readbacks()["log_samples"]).reshape(-1, len(CYCLER_LOG_COLUMNS))
    column = {name: rows[:, i] for i, name in enumerate(CYCLER_LOG_COLUMNS)}
    assert engine.log_count == 4 and engine.log_readbacks()["log_count"] == 4
    np.testing.assert_array_equal(column["index"], [0, 1, 2, 3])
    np.testing.assert_array_equal(column["time"], [1000.0, 1001.0, 1002.0, 1003.0])
    np.testing.assert_allclose(column["step_time"], [0.0, 100.0, 200.0, 300.0])
    np.testing.assert_array_equal(column["current"], [0.0, 1.0, 1.0, 1.0])  # at rest before, then the step
    assert column["potential"][2] == after_two["potential"]
    assert column["step_capacity"][-1] == pytest.approx(1.0 * 300.0 / 3600.0)  # I t, mAh
    states = list(CyclerState)
    assert [states[int(i)] for i in column["state"]] == [CyclerState.IDLE] + [CyclerState.RUNNING] * 2 + [
        CyclerState.TIME_REACHED]


def test_the_log_keeps_the_newest_samples_and_counts_them_all():
    engine = new_engine()
    engine.start(CyclerStep("REST", duration_s=1e6))
    for _ in range(LOG_LENGTH + 10):
        engine.advance(1.0)

    rows = np.array(engine.log_readbacks()["log_samples"]).reshape(-1, len(CYCLER_LOG_COLUMNS))
    assert engine.log_count == LOG_LENGTH + 11  # with the state the step started from
    assert len(rows) == LOG_LENGTH
    np.testing.assert_array_equal(rows[:, 0], np.arange(11, LOG_LENGTH + 11))  # the newest, oldest first
    assert rows[-1, CYCLER_LOG_COLUMNS.index("step_time")] == LOG_LENGTH + 10.0


def test_a_log_read_after_samples_were_overwritten_names_what_was_lost(RE, sim_cycler):
    log = CyclerLog(sim_cycler)

    def plan():
        yield from bps.stage(log, wait=True)
        sim_cycler.engine.start(CyclerStep("REST", duration_s=1e6))
        for _ in range(LOG_LENGTH + 10):  # the channel logs on while nobody reads
            sim_cycler.engine.advance(1.0)
        sim_cycler._publish()
        yield from bps.trigger(log, wait=True)

    with pytest.raises(FailedStatus) as failure:
        RE(plan())
    assert isinstance(failure.value.__cause__, CyclerLogOverrunError)
    assert "were overwritten before they were read" in str(failure.value.__cause__)


def test_wall_clock_advances_time_scale_seconds_per_wall_second_carrying_step_ends():
    wall = [0.0]
    engine = new_engine()
    clock = WallClock(engine, now=lambda: wall[0])
    engine.start(CyclerStep("REST", duration_s=300.0))
    wall[0] = 10.0

    clock.tick(100.0)  # 1000 simulated s are due: the rest ends at 300 s
    assert engine.state is CyclerState.TIME_REACHED and engine.time_s == 300.0
    clock.tick(100.0)  # no wall time passed: the 700 s left over
    assert engine.time_s == pytest.approx(1000.0)
    with pytest.raises(ValueError, match="time_scale"):
        clock.tick(-1.0)


# --------------------------------------------------------------------------------------
# Simulated twin
# --------------------------------------------------------------------------------------
@pytest.fixture
def sim_cycler(RE) -> SimCycler:
    cycler = SimCycler(new_engine(), time_scale=5000.0, name="cycler", update_period_s=0.02)
    connect_devices({"cycler": cycler})
    return cycler


def test_sim_cycler_mv_completes_when_the_limit_is_reached(RE, sim_cycler):
    seen = {}

    def plan():
        yield from bps.mv(sim_cycler, CyclerStep("CC_CHARGE", FAST_MA, v_max=4.5))
        seen["state"] = yield from bps.rd(sim_cycler.state)
        seen["message"] = yield from bps.rd(sim_cycler.message)

    RE(plan())

    assert seen["state"] == CyclerState.LIMIT_REACHED and "v_max 4.5 V reached" in seen["message"]
    assert sim_cycler.engine.step_index == 1
    assert sim_cycler.engine.specific_capacity_mAh_g > 200.0


def test_sim_cycler_reports_progress_towards_the_limit_a_few_times_a_second(sim_cycler):
    """The first and the last potential always; in between at most one update per
    PROGRESS_INTERVAL_S (blueapi publishes each on its bus), however fast the channel."""
    updates = []

    async def charge():
        status = sim_cycler.set(CyclerStep("CC_CHARGE", FAST_MA, v_max=4.5))
        status.watch(lambda **kw: updates.append(kw))
        await status

    began = time.monotonic()
    run(charge())
    elapsed = time.monotonic() - began

    assert len(updates) >= 2 and {u["target"] for u in updates} == {4.5} and updates[-1]["unit"] == "V"
    assert updates[0]["current"] < 3.5 < 4.5 <= updates[-1]["current"]
    assert len(updates) <= elapsed / PROGRESS_INTERVAL_S + 2


def test_sim_cycler_readings_have_the_documented_keys(RE, sim_cycler):
    docs = []
    RE(bp.count([sim_cycler]), lambda name, doc: docs.append((name, doc)))

    descriptor = next(doc for name, doc in docs if name == "descriptor")
    assert set(descriptor["data_keys"]) == {f"cycler-{key}" for key in READING_KEYS}
    assert set(descriptor["configuration"]["cycler"]["data"]) == {f"cycler-{key}" for key in CONFIG_KEYS}
    assert descriptor["hints"]["cycler"] == {"fields": ["cycler-potential"]}
    units = {key: descriptor["data_keys"][f"cycler-{key}"].get("units") for key in READING_KEYS}
    assert units == {"potential": "V", "current": "mA", "step_capacity": "mAh", "total_charge": "mAh",
                     "step_time": "s", "step_index": "", "cycle_index": "", "state": None}
    event = next(doc for name, doc in docs if name == "event")
    assert event["data"]["cycler-state"] == "IDLE"
    assert event["data"]["cycler-potential"] == pytest.approx(2.6, abs=0.05)  # pristine, open circuit


def test_sim_cycler_refuses_a_bad_step_before_anything_moves(sim_cycler):
    with pytest.raises(ValueError, match="safety maximum"):
        run(set_and_wait(sim_cycler, CyclerStep("CC_CHARGE", 2000.0 * MASS_G)))
    with pytest.raises(TypeError, match="CyclerStep"):
        run(set_and_wait(sim_cycler, 4.5))

    assert sim_cycler.engine.step_index == 0


def test_sim_cycler_stop_fails_the_step_unless_success(sim_cycler):
    async def stop_while_running(success: bool):
        status = sim_cycler.set(CyclerStep("OCV", duration_s=1e9))
        await wait_for_state(sim_cycler, CyclerState.RUNNING)
        await sim_cycler.stop(success=success)
        await status

    with pytest.raises(RuntimeError, match="stopped"):
        run(stop_while_running(success=False))
    run(stop_while_running(success=True))

    assert run(sim_cycler.state.get_value()) == CyclerState.IDLE


def test_sim_cycler_fault_fails_the_step_with_the_reason(sim_cycler):
    async def fault_while_running():
        status = sim_cycler.set(CyclerStep("OCV", duration_s=1e9))
        await wait_for_state(sim_cycler, CyclerState.RUNNING)
        sim_cycler.engine.fault("cell temperature above 60 C")
        await status

    with pytest.raises(CyclerFaultError, match="temperature above 60 C"):
        run(fault_while_running())


def test_sim_cycler_time_scale_is_a_signal_that_refuses_negative_values(sim_cycler):
    run(set_and_wait(sim_cycler.time_scale, 0.0))  # the simulated world freezes
    time_before = sim_cycler.engine.time_s
    run(asyncio.sleep(0.1))
    assert sim_cycler.engine.time_s == time_before

    with pytest.raises(ValueError, match="time_scale"):
        run(set_and_wait(sim_cycler.time_scale, -1.0))


# --------------------------------------------------------------------------------------
# EPICS class against the soft IOC
# --------------------------------------------------------------------------------------
IOC_TIME_SCALE = 1500.0  # a 1000 mA/g charge to 4.5 V takes ~0.6 wall s


@pytest.fixture(scope="module")
def cycler_ioc(tmp_path_factory) -> str:
    """`tests/iocs/cycler_ioc.py` on 127.0.0.1 with a unique prefix (the session's CA setup)."""
    prefix = f"NSTEST{secrets.token_hex(4)}:CYC:"
    command = [sys.executable, "-m", "tests.iocs.cycler_ioc", "--prefix", prefix, "--time-scale", str(IOC_TIME_SCALE)]
    with running_ioc(command, prefix, tmp_path_factory.mktemp("cycler_ioc") / "ioc.log", cwd=REPO):
        yield prefix


@pytest.fixture
def epics_cycler(RE, cycler_ioc) -> EpicsCycler:
    cycler = EpicsCycler(cycler_ioc, name="cycler")
    connect_devices({"cycler": cycler})
    return cycler


@pytest.mark.ioc
def test_epics_cycler_charges_to_the_limit_over_ca(RE, epics_cycler):
    docs = []

    @bpp.run_decorator()
    def plan():
        yield from bps.mv(epics_cycler, CyclerStep("CC_DISCHARGE", FAST_MA, v_min=3.0))  # any state -> low
        yield from bps.monitor(epics_cycler.potential, name="potential")  # every update the IOC posts
        status = yield from bps.abs_set(epics_cycler, CyclerStep("CC_CHARGE", FAST_MA, v_max=4.5), group="charge")
        while not status.done:
            yield from bps.trigger_and_read([epics_cycler])
            yield from bps.sleep(0.05)
        yield from bps.wait("charge")
        yield from bps.trigger_and_read([epics_cycler])
        yield from bps.sleep(0.2)  # monitor updates still on their way
        yield from bps.unmonitor(epics_cycler.potential)

    RE(plan(), lambda name, doc: docs.append((name, doc)))

    streams = {doc["uid"]: doc["name"] for name, doc in docs if name == "descriptor"}
    events = [doc for name, doc in docs if name == "event" and streams[doc["descriptor"]] == "primary"]
    monitored = [doc["data"]["cycler-potential"] for name, doc in docs
                 if name == "event" and streams[doc["descriptor"]] == "potential"]
    last = events[-1]["data"]
    assert last["cycler-state"] == CyclerState.LIMIT_REACHED
    assert last["cycler-step_capacity"] > 100.0 * MASS_G  # > 100 mAh/g
    assert 4.49 <= max(monitored) < 4.6  # the end-of-step sample, at the limit
    step_times = [e["data"]["cycler-step_time"] for e in events if e["data"]["cycler-step_index"] == last["cycler-step_index"]]
    assert len(set(step_times)) >= 3 and step_times == sorted(step_times)  # readings move
    assert "v_max 4.5 V reached" in run(epics_cycler.message.get_value())


@pytest.mark.ioc
def test_the_log_readback_over_ca_gives_every_sample_of_a_step_once(RE, epics_cycler):
    from nanostrain.plans.cycling import record_log

    log = CyclerLog(epics_cycler)
    docs = []

    @bpp.stage_decorator([log])
    @bpp.run_decorator()
    def plan():
        yield from bps.mv(epics_cycler, CyclerStep("CC_DISCHARGE", FAST_MA, v_min=3.0))  # any state -> low
        yield from record_log(log)  # what the discharge logged since staging
        status = yield from bps.abs_set(epics_cycler.unattended, CyclerStep("CC_CHARGE", FAST_MA, v_max=4.5),
                                        group="charge")
        yield from bps.sleep(0.3)  # away for a while: the samples wait in the IOC's log
        while not status.done:
            yield from record_log(log)
            yield from bps.sleep(0.05)
        yield from bps.sleep(0.2)  # the end-of-step sample on its way
        yield from record_log(log)

    first = run(epics_cycler.log_count.get_value())
    RE(plan(), lambda name, doc: docs.append((name, doc)))

    events = [doc["data"] for name, doc in docs if name == "event"]
    assert [e["cycler-log_index"] for e in events] == list(range(first, run(epics_cycler.log_count.get_value())))
    charge = [e for e in events if e["cycler-current"] > 0.0]
    assert len(charge) >= 5 and charge[-1]["cycler-state"] == CyclerState.LIMIT_REACHED
    assert [e["cycler-step_time"] for e in charge] == sorted(e["cycler-step_time"] for e in charge)


@pytest.mark.ioc
def test_epics_cycler_stop_ends_the_step(RE, epics_cycler):
    async def stop_while_running():
        status = epics_cycler.set(CyclerStep("OCV", duration_s=1e9))
        await wait_for_state(epics_cycler, CyclerState.RUNNING)
        await epics_cycler.stop(success=True)
        await status

    run(stop_while_running())

    assert run(epics_cycler.state.get_value()) == CyclerState.IDLE
    assert "stopped" in run(epics_cycler.message.get_value())


@pytest.mark.ioc
def test_epics_cycler_reports_a_step_the_ioc_refuses(RE, epics_cycler):
    seen = {}

    def plan():  # setpoints written by hand, bypassing set()'s checks
        yield from bps.mv(epics_cycler.mode, CyclerMode.REST, epics_cycler.duration, 0.0)
        yield from bps.mv(epics_cycler.start_step, True)
        seen["state"] = yield from bps.rd(epics_cycler.state)
        seen["message"] = yield from bps.rd(epics_cycler.message)

    RE(plan())

    state, message = seen["state"], seen["message"]
    assert state == CyclerState.FAULT and "needs a duration" in message
    with pytest.raises(ValueError, match="safety maximum"):  # refused by the client first
        run(set_and_wait(epics_cycler, CyclerStep("CC_CHARGE", 2000.0 * MASS_G)))


@pytest.mark.ioc
def test_sim_and_epics_cyclers_describe_the_same_data(RE, epics_cycler, sim_cycler):
    def without_source(data_keys: dict) -> dict:
        return {key: {k: v for k, v in value.items() if k != "source"} for key, value in data_keys.items()}

    for verb in ("describe", "describe_configuration"):
        sim = run(getattr(sim_cycler, verb)())
        epics = run(getattr(epics_cycler, verb)())
        assert without_source(sim) == without_source(epics), verb
    assert sim_cycler.hints == epics_cycler.hints


def test_the_pv_table_documents_exactly_the_interface():
    documented = re.findall(r"^\| `\{prefix\}([^`]+)`", (REPO / "docs" / "cycler-pvs.md").read_text(), re.M)

    assert sorted(documented) == sorted(pv.suffix for pv in {**CYCLER_PVS, **CYCLER_LOG_PVS}.values())


def test_the_engine_publishes_every_readback_record_state_last():
    readbacks = new_engine().readbacks()

    assert set(readbacks) == {attr for attr, pv in CYCLER_PVS.items() if not pv.writable}
    assert list(readbacks)[-1] == "state"
    assert all(isinstance(readbacks[attr], CYCLER_PVS[attr].datatype) for attr in readbacks)
