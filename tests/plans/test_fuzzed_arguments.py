"""Plan arguments fuzzed (hypothesis) against every plan of the registry (issue 12, part 6).

For every plan of `nanostrain.plans.registry()` and every one of its parameters, drawn
values that are non-finite, below or above the documented range, of the wrong type, or
the wrong device must be refused by `nanostrain.plans.validate` (the plan's own checks,
run up to its first message) with a `PlanArgumentError` naming the argument; values
inside the range must pass. The devices are the simulated beamline's
(`nanostrain.beamline.make_devices`). A table classifies every parameter of every plan
(`test_every_parameter_of_every_plan_is_fuzzed`), so a new parameter must be added here.

Ranges are the plans' own constants (their docstrings state them). Limits arguments
(``limits_mm``, ``limits_um``, ``limits_deg``) only narrow where a plan may move, so a
wide finite limit is not refused: the axes' own soft limits are read before anything moves.
"""

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from ophyd_async.core import soft_signal_r_and_setter

from nanostrain.beamline import connect_devices
from nanostrain.plans import alignment, calibration, cycling, registry, sxdm, txm, validate
from nanostrain.plans.protocols import MAX_STEP_S
from nanostrain.plans.validation import PlanArgumentError
from nanostrain.schema.cycler import MAX_RATE_MA_G
from nanostrain.schema.sample import CHARGE_WINDOW_V, MAX_CYCLES

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------
# What every parameter of every plan accepts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    """A numeric parameter accepting [low, high] (``open_low``/``open_high``: the end
    excluded); ``integer``: ints only; ``optional``: None is accepted (absent). ``valid``:
    the part of the range that passes with the base call's other arguments (default the
    whole range); ``base``: arguments to change in the base call when fuzzing this one."""

    low: float
    high: float
    open_low: bool = False
    open_high: bool = False
    integer: bool = False
    optional: bool = False
    valid: tuple[float, float] | None = None
    base: dict[str, Any] = field(default_factory=dict)


def positive(high: float, **kwargs) -> Number:
    return Number(0.0, high, open_low=True, **kwargs)


def count(low: int, high: int, **kwargs) -> Number:
    return Number(low, high, integer=True, **kwargs)


@dataclass(frozen=True)
class Numbers:
    """A sequence parameter: ``valid`` is a value that passes, ``limit`` the most values
    it may hold."""

    limit: int


@dataclass(frozen=True)
class Device:
    """A device parameter: the beamline devices (by name) that fill its role;
    ``optional``: None is accepted."""

    accepted: frozenset[str]
    optional: bool = False


@dataclass(frozen=True)
class Other:
    """Any other parameter: a strategy of values it must refuse."""

    bad: st.SearchStrategy


READABLES = frozenset({"sx", "i0", "cam", "cycler", "xrd", "np_stage", "np_theta", "np_i0", "merlin", "np_xrf",
                       "feedback", "dcm", "xas_ic", "xas_fly", "ring_current", "shutter"})
AREA_DETECTORS = frozenset({"cam", "xrd", "merlin"})
ANY_TEXT = st.text(max_size=8)
NOT_A_DICT = st.one_of(ANY_TEXT, st.integers(), st.floats(), st.lists(st.integers(), max_size=3), st.booleans())
NOT_A_BOOL = st.one_of(ANY_TEXT, st.integers(), st.floats(allow_nan=True), st.none(), st.lists(st.booleans(), max_size=2))
METADATA = {"sample": Other(NOT_A_DICT | st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2)),
            "md": Other(NOT_A_DICT | st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2))}
BAD_STEP = st.fixed_dictionaries({
    "mode": st.sampled_from(["CC_CHARGE", "CC_DISCHARGE", "REST"]),
    "rate_mA_g": st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 < v <= MAX_RATE_MA_G),
                           ANY_TEXT),
    "duration_s": st.one_of(st.just(math.nan), st.floats(min_value=MAX_STEP_S, exclude_min=True), st.none()),
})
BAD_PROTOCOL = st.one_of(NOT_A_DICT, st.lists(BAD_STEP, min_size=1, max_size=3),
                         st.fixed_dictionaries({"name": st.one_of(ANY_TEXT, st.lists(st.integers(), max_size=2))}))

CYCLING = {"active_mass_g": Number(*cycling.ACTIVE_MASS_RANGE_G), "poll_s": Number(*cycling.POLL_S_RANGE),
           "cycler": Device(frozenset({"cycler"})), "protocol": Other(BAD_PROTOCOL), **METADATA}

PARAMETERS: dict[str, dict[str, Number | Numbers | Device | Other]] = {
    "alignment_scan": {
        "cam": Device(AREA_DETECTORS),
        "stage": Device(frozenset({"sx", "np_theta", "dcm"})),
        "start_mm": Number(-10.0, 10.0),
        "stop_mm": Number(-10.0, 10.0),
        "num": count(2, alignment.MAX_POINTS),
        "monitor": Device(READABLES, optional=True),
        "exposure_s": positive(alignment.MAX_EXPOSURE_S),
        "limits_mm": Numbers(2),
        **METADATA,
    },
    "operando_xrd": {
        **CYCLING,
        "detector": Device(frozenset({"xrd"})),
        "geometry": Other(NOT_A_DICT | st.just({"dist": "far"})),
        "cadence_s": positive(cycling.MAX_CADENCE_S),
        "cadence_mAh_g": positive(cycling.MAX_CADENCE_MAH_G, base={"cadence_s": None}),
        "exposure_s": positive(cycling.MAX_EXPOSURE_S),
        "monitor": Device(READABLES, optional=True),
        "min_flux": Number(0.0, cycling.MAX_FLUX),
        "feedback": Device(READABLES),
        "feedback_threshold": Number(-cycling.MAX_FEEDBACK_THRESHOLD, cycling.MAX_FEEDBACK_THRESHOLD),
        "dense_factor": Number(*cycling.DENSE_FACTOR_RANGE),
    },
    "gitt": CYCLING,
    "cycle_cell": CYCLING,
    "calibrate_xrd": {
        "detector": Device(frozenset({"xrd"})),
        "poni_path": Other(st.one_of(st.integers(), st.floats(), st.none(), st.just(""), st.lists(ANY_TEXT, max_size=2))),
        "refined_geometry": Device(READABLES),
        "exposure_s": positive(calibration.MAX_EXPOSURE_S),
        "calibrant": Other(ANY_TEXT.filter(lambda text: text not in calibration.KNOWN_CALIBRANTS) | st.integers()),
        "start_geometry": Other(NOT_A_DICT | st.just({"dist": "far"})),
        "timeout_s": positive(calibration.MAX_TIMEOUT_S),
        **METADATA,
    },
    "sxdm_rocking_raster": {
        "detector": Device(AREA_DETECTORS),
        "stage": Device(frozenset({"np_stage"})),
        "theta": Device(frozenset({"np_theta"})),
        "x": Numbers(2),
        "y": Numbers(2),
        "step": Number(*sxdm.STEP_UM_RANGE, valid=(0.2, 0.2)),
        "thetas": Numbers(sxdm.MAX_ANGLES),
        "mode": Other(ANY_TEXT.filter(lambda text: text not in ("step", "fly")) | st.integers()),
        "exposure_s": positive(sxdm.MAX_EXPOSURE_S),
        "deadtime_s": Number(0.0, sxdm.MAX_EXPOSURE_S),
        "geometry": Other(NOT_A_DICT | st.just({"energy_eV": 12000.0})),
        "monitor": Device(READABLES, optional=True),
        "xrf": Device(READABLES, optional=True),
        "background": Number(0.0, sxdm.MAX_BACKGROUND),
        "roi": Other(st.one_of(NOT_A_DICT, st.lists(st.integers(max_value=-1), min_size=4, max_size=4),
                               st.lists(st.floats(), min_size=4, max_size=4), st.lists(st.integers(0, 9), max_size=3))),
        "limits_um": Numbers(2),
        "limits_deg": Numbers(2),
        "max_time_s": positive(sxdm.MAX_TIME_BUDGET_S, valid=(100.0, sxdm.MAX_TIME_BUDGET_S)),
        "progress": Other(NOT_A_BOOL),
        **METADATA,
    },
    "find_bragg_peak": {
        "detector": Device(frozenset({"merlin"})),
        "theta": Device(frozenset({"np_theta"})),
        "thetas": Numbers(sxdm.MAX_ANGLES),
        "exposure_s": positive(sxdm.MAX_EXPOSURE_S),
        "move": Other(NOT_A_BOOL),
        "monitor": Device(READABLES, optional=True),
        "limits_deg": Numbers(2),
        **METADATA,
    },
    "xrf_map": {
        "xrf": Device(frozenset({"np_xrf"})),
        "stage": Device(frozenset({"np_stage"})),
        "x": Numbers(2),
        "y": Numbers(2),
        "step": Number(*sxdm.STEP_UM_RANGE, valid=(0.5, 0.5)),
        "exposure_s": positive(sxdm.MAX_EXPOSURE_S),
        "monitor": Device(READABLES, optional=True),
        "threshold": Number(0.0, 1.0, open_low=True, open_high=True),
        "move_to_particle": Other(NOT_A_BOOL),
        "limits_um": Numbers(2),
        "max_time_s": positive(sxdm.MAX_TIME_BUDGET_S, valid=(100.0, sxdm.MAX_TIME_BUDGET_S)),
        **METADATA,
    },
    "txm_xanes_tomo": {
        "txm": Device(frozenset({"txm"})),
        "energies_eV": Numbers(txm.MAX_ENERGIES),
        "angles_deg": Numbers(txm.MAX_ANGLES),
        "exposure_s": positive(txm.MAX_EXPOSURE_S),
        "n_flats": count(1, txm.MAX_FLATS),
        "n_darks": count(1, txm.MAX_FLATS),
        "flat_every": count(1, txm.MAX_ENERGIES),
        **METADATA,
    },
    "txm_xanes_2d": {
        "txm": Device(frozenset({"txm"})),
        "energies_eV": Numbers(txm.MAX_ENERGIES),
        "angle_deg": Number(-360.0, 360.0),
        "exposure_s": positive(txm.MAX_EXPOSURE_S),
        "n_flats": count(1, txm.MAX_FLATS),
        "n_darks": count(1, txm.MAX_FLATS),
        "flat_every": count(1, txm.MAX_ENERGIES),
        **METADATA,
    },
    "energy_calibration": {
        "txm": Device(frozenset({"txm"})),
        "energies_eV": Numbers(txm.MAX_ENERGIES),
        "edge_eV": Number(5000.0, 11000.0, valid=(8320.0, 8346.0)),
        "exposure_s": positive(txm.MAX_EXPOSURE_S),
        "n_darks": count(1, txm.MAX_FLATS),
        "apply": Other(NOT_A_BOOL),
        **METADATA,
    },
    "xas_scan": {
        "dcm": Device(frozenset({"dcm"})),
        "chambers": Device(frozenset({"xas_ic"})),
        "regions": Other(NOT_A_DICT | st.lists(st.fixed_dictionaries({
            "space": st.sampled_from(["E", "k"]), "start": st.floats(allow_nan=True, allow_infinity=True) | ANY_TEXT,
            "stop": st.just(-1.0), "step": st.floats(max_value=0.0) | st.just(math.nan), "dwell_s": st.floats(),
        }), min_size=1, max_size=2)),
        "e0_eV": Number(5000.0, 11000.0, valid=(5000.0, 10450.0)),
        "reference_edge_eV": Number(5000.0, 11000.0),
        **METADATA,
    },
    "xas_fly_scan": {
        "dcm": Device(frozenset({"dcm"})),
        "sampler": Device(frozenset({"xas_fly"})),
        "segments": Other(NOT_A_DICT | st.lists(st.fixed_dictionaries({
            "space": st.sampled_from(["E", "k"]), "start": st.floats(allow_nan=True, allow_infinity=True) | ANY_TEXT,
            "stop": st.just(-1.0), "velocity_eV_s": st.floats(max_value=0.0) | st.just(math.nan),
        }), min_size=1, max_size=2)),
        "interval_s": Number(0.01, 10.0, valid=(0.01, 0.125)),  # 2 eV/s across the edge: <= 0.25 eV a sample
        "e0_eV": Number(5000.0, 11000.0, valid=(5030.0, 10970.0)),
        "reference_edge_eV": Number(5000.0, 11000.0),
        **METADATA,
    },
    "mount_sample": {
        "device": Device(frozenset({"cycler", "xrd", "merlin", "txm", "xas_ic"})),
        "sample": Other(st.one_of(st.integers(), st.floats(), st.none(), st.lists(st.integers(), max_size=2),
                                  st.fixed_dictionaries({"material": st.integers()}))),
        # the sample's state, given as keyword arguments (**state)
        "charge_V": Number(*CHARGE_WINDOW_V, optional=True),
        "cycles": count(0, MAX_CYCLES),
        "current_mA_g": positive(MAX_RATE_MA_G, optional=True, base={"charge_V": 4.3}),
    },
}


def base_calls(devices: dict, folder) -> dict[str, dict[str, Any]]:
    """Per plan, keyword arguments that pass its checks."""
    energies = list(np.arange(8340.0, 8360.5, 2.0))
    angles = list(np.linspace(0.0, 180.0, 13))
    return {
        "alignment_scan": {"cam": devices["cam"], "stage": devices["sx"], "start_mm": -1.0, "stop_mm": 1.0, "num": 11,
                           "monitor": devices["i0"]},
        "operando_xrd": {"cycler": devices["cycler"], "detector": devices["xrd"],
                         "protocol": [{"mode": "CC_CHARGE", "rate_mA_g": 100.0}, {"mode": "REST", "duration_s": 60.0}],
                         "active_mass_g": 6.16e-3, "cadence_s": 60.0, "monitor": devices["i0"],
                         "feedback": devices["feedback"], "feedback_threshold": 0.01},
        "gitt": {"cycler": devices["cycler"], "active_mass_g": 6e-3,
                 "protocol": {"name": "gitt", "args": {"pulse_s": 600.0, "max_titrations": 3}}},
        "cycle_cell": {"cycler": devices["cycler"], "active_mass_g": 6.16e-3,
                       "protocol": {"name": "galvanostatic", "args": {"rate_mA_g": 100.0, "cycles": 1}}},
        "calibrate_xrd": {"detector": devices["xrd"], "poni_path": str(folder / "detector.poni"),
                          "refined_geometry": devices["feedback"]},
        "sxdm_rocking_raster": {"detector": devices["merlin"], "stage": devices["np_stage"],
                                "theta": devices["np_theta"], "x": [-0.4, 0.4], "y": [-0.4, 0.4], "step": 0.2,
                                "thetas": [6.0, 6.1], "progress": False,
                                "geometry": devices["merlin"].sxdm_geometry().to_metadata()},
        "find_bragg_peak": {"detector": devices["merlin"], "theta": devices["np_theta"],
                            "thetas": [5.8, 5.9, 6.0, 6.1, 6.2]},
        "xrf_map": {"xrf": devices["np_xrf"], "stage": devices["np_stage"], "x": [-1.0, 1.0], "y": [-1.0, 1.0],
                    "step": 0.5},
        "txm_xanes_tomo": {"txm": devices["txm"], "energies_eV": energies, "angles_deg": angles},
        "txm_xanes_2d": {"txm": devices["txm"], "energies_eV": energies},
        "energy_calibration": {"txm": devices["txm"]},
        "xas_scan": {"dcm": devices["dcm"], "chambers": devices["xas_ic"],
                     "regions": [{"space": "k", "start": 3.0, "stop": 12.0, "step": 0.5, "dwell_s": 0.1}]},
        "xas_fly_scan": {"dcm": devices["dcm"], "sampler": devices["xas_fly"],
                         "segments": [{"space": "E", "start": -30.0, "stop": 30.0, "velocity_eV_s": 2.0}]},
        "mount_sample": {"device": devices["txm"], "sample": {"material": "NM91", "morphology": "SC"}},
    }


@pytest.fixture(scope="module")
def beamline(sim_devices, tmp_path_factory):
    """The simulated devices plus a live signal (``feedback``), and the base calls."""
    feedback = soft_signal_r_and_setter(float, name="feedback")[0]
    connect_devices({"feedback": feedback})
    devices = {**sim_devices, "feedback": feedback}
    return {"devices": devices, "calls": base_calls(devices, tmp_path_factory.mktemp("poni"))}


def call(beamline, plan: str, name: str, value: Any, spec: Any = None) -> None:
    """Validate ``plan`` with its base call, ``spec.base`` applied and ``name`` = ``value``."""
    kwargs = {**beamline["calls"][plan], **getattr(spec, "base", {}), name: value}
    validate(plan, **{key: item for key, item in kwargs.items() if item is not None or key == name})


def assert_refused(beamline, plan: str, name: str, value: Any, spec: Any = None) -> None:
    """``plan`` refuses ``name`` = ``value`` with a PlanArgumentError naming ``name``."""
    with pytest.raises(PlanArgumentError) as refusal:
        call(beamline, plan, name, value, spec)
    assert name in str(refusal.value), (plan, name, value, str(refusal.value))


def cases(kind: type) -> list[tuple[str, str]]:
    return [(plan, name) for plan, parameters in PARAMETERS.items() for name, spec in parameters.items()
            if isinstance(spec, kind)]


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
WRONG_TYPE = st.one_of(ANY_TEXT, st.none(), st.booleans(), st.lists(st.floats(), max_size=3),
                       st.dictionaries(ANY_TEXT, st.integers(), max_size=2), st.complex_numbers(allow_nan=False))


def out_of_range(spec: Number) -> st.SearchStrategy:
    """Non-finite, below, above, wrong-type values of a numeric parameter."""
    wrong_type = WRONG_TYPE.filter(lambda value: value is not None) if spec.optional else WRONG_TYPE
    if spec.integer:
        below = st.integers(max_value=int(spec.low) - 1, min_value=-(10**30))
        above = st.integers(min_value=int(spec.high) + 1, max_value=10**30)
        # a float, even a whole one, is the wrong type for a count
        return st.one_of(below, above, NON_FINITE, wrong_type, st.floats(min_value=spec.low, max_value=spec.high))
    below = st.floats(max_value=spec.low, exclude_max=not spec.open_low, allow_infinity=False)
    above = st.floats(min_value=spec.high, exclude_min=not spec.open_high, allow_infinity=False)
    return st.one_of(below, above, NON_FINITE, wrong_type)


def in_range(spec: Number) -> st.SearchStrategy:
    low, high = spec.valid or (spec.low, spec.high)
    if spec.integer:
        return st.integers(int(low), int(high))
    return st.floats(low, high, exclude_min=spec.open_low and low == spec.low,
                     exclude_max=spec.open_high and high == spec.high)


BAD_ELEMENT = st.one_of(NON_FINITE, ANY_TEXT, st.none(), st.lists(st.floats(), max_size=2),
                        st.floats(min_value=1e12, allow_infinity=False), st.floats(max_value=-1e12, allow_infinity=False))


def bad_sequences(valid: list[float], limit: int) -> st.SearchStrategy:
    """A valid sequence with one element replaced by a non-finite, huge or ill-typed
    value; a sequence too long (a lazy range, never allocated), or not a sequence."""

    def replace(index_and_value):
        index, value = index_and_value
        return [value if i == index % len(valid) else item for i, item in enumerate(valid)]

    one_bad = st.tuples(st.integers(0, len(valid) - 1), BAD_ELEMENT).map(replace)
    not_a_sequence = st.one_of(ANY_TEXT, st.none(), st.floats(), st.integers(),
                               st.dictionaries(ANY_TEXT, st.floats(), max_size=2))
    too_long = st.integers(limit + 1, 10**15).map(lambda n: range(n))
    return st.one_of(one_bad, not_a_sequence, too_long)


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------
def test_every_parameter_of_every_plan_is_fuzzed():
    assert set(PARAMETERS) == set(registry())
    for plan, function in registry().items():
        parameters = {name for name, p in inspect.signature(function).parameters.items()
                      if p.kind is not inspect.Parameter.VAR_KEYWORD}
        assert parameters <= set(PARAMETERS[plan]), (plan, parameters - set(PARAMETERS[plan]))


def test_the_base_calls_pass(beamline):
    for plan, kwargs in beamline["calls"].items():
        validate(plan, **kwargs)


@pytest.mark.parametrize(("plan", "name"), cases(Number))
@FUZZ
@given(data=st.data())
def test_numbers_out_of_range_non_finite_or_ill_typed_are_refused(beamline, plan, name, data):
    spec = PARAMETERS[plan][name]
    assert_refused(beamline, plan, name, data.draw(out_of_range(spec), label=name), spec)


@pytest.mark.parametrize(("plan", "name"), cases(Number))
@FUZZ
@given(data=st.data())
def test_numbers_in_range_pass(beamline, plan, name, data):
    spec = PARAMETERS[plan][name]
    call(beamline, plan, name, data.draw(in_range(spec), label=name), spec)


@pytest.mark.parametrize(("plan", "name"), cases(Numbers))
@FUZZ
@given(data=st.data())
def test_sequences_with_a_bad_value_too_long_or_ill_typed_are_refused(beamline, plan, name, data):
    spec = PARAMETERS[plan][name]
    valid = beamline["calls"][plan].get(name) or list(inspect.signature(registry()[plan]).parameters[name].default)
    bad = data.draw(bad_sequences(list(valid), spec.limit), label=name)
    if name.startswith("limits_") and isinstance(bad, list) and all(
            isinstance(v, float) and math.isfinite(v) for v in bad) and bad[0] < bad[1]:
        return  # a wide limit only widens what the plan checks (module docstring)
    assert_refused(beamline, plan, name, bad)


@pytest.mark.parametrize(("plan", "name"), cases(Device))
@FUZZ
@given(data=st.data())
def test_wrong_devices_and_names_are_refused(beamline, plan, name, data):
    spec = PARAMETERS[plan][name]
    devices = beamline["devices"]
    wrong = sorted(set(devices) - spec.accepted)
    value = data.draw(st.one_of(st.sampled_from(wrong).map(devices.get) if wrong else st.nothing(),
                                st.sampled_from(sorted(devices)),  # a queue item's unresolved name
                                st.integers(), st.floats(), st.dictionaries(ANY_TEXT, st.integers(), max_size=2),
                                st.none() if not spec.optional else st.nothing()), label=name)
    assert_refused(beamline, plan, name, value)


@pytest.mark.parametrize(("plan", "name"), cases(Device))
def test_the_right_devices_are_accepted(beamline, plan, name):
    for device in sorted(PARAMETERS[plan][name].accepted):
        call(beamline, plan, name, beamline["devices"][device])


@pytest.mark.parametrize(("plan", "name"), cases(Other))
@FUZZ
@given(data=st.data())
def test_other_arguments_of_the_wrong_kind_are_refused(beamline, plan, name, data):
    spec = PARAMETERS[plan][name]
    value = data.draw(spec.bad, label=name)
    with pytest.raises(PlanArgumentError) as refusal:
        call(beamline, plan, name, value)
    if name == "protocol":  # a bad step is refused naming its field
        assert any(word in str(refusal.value) for word in ("protocol", "rate_mA_g", "duration_s")), str(refusal.value)
    else:
        assert name in str(refusal.value), (plan, name, value, str(refusal.value))
