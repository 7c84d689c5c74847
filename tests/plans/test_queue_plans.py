"""Plans a queue can introspect and call with JSON (issue 9, item 1).

bluesky-queueserver describes a plan from ``inspect.signature`` (annotations as objects,
defaults through ``ast.literal_eval(repr(default))``), validates a JSON item with a
pydantic model built from that description, and turns device names into the namespace's
objects for parameters typed as devices. These tests use queueserver's own functions on
`nanostrain.plans.registry()` and the simulated beamline's devices, then give the
prepared arguments to `nanostrain.plans.validate`, which runs each plan's own checks.
"""

import ast
import collections.abc
import inspect
import json
import typing

import pytest
from bluesky.protocols import Readable
from bluesky_queueserver.manager import profile_ops
from ophyd_async.core import soft_signal_r_and_setter

from nanostrain.beamline import connect_devices, make_devices
from nanostrain.plans import registry, validate
from nanostrain.plans.protocols import ProtocolStep, galvanostatic, gitt as gitt_protocol, resolve_protocol
from nanostrain.plans.validation import PlanArgumentError

#: The live signals a session exposes (`Session.live_signals`) that the items below name.
LIVE_SIGNALS = {"xrd_reduction_lattice_change_A": float, "xrd_calibration_geometry": str}


def items(poni_path: str, sxdm_geometry: dict) -> dict[str, tuple[dict, dict, str]]:
    """Per plan: a JSON queue item, an override of it that the plan refuses, and the
    refusal's message."""
    return {
        "alignment_scan": (
            {"args": ["cam", "sx", -1.0, 1.0, 11], "kwargs": {"monitor": "i0", "sample": {"name": "pinhole"}}},
            {"args": ["cam", "sx", -1.0, 1.0, 1]}, "num must be an integer"),
        "operando_xrd": (
            {"args": ["cycler", "xrd", [{"mode": "CC_CHARGE", "rate_mA_g": 100.0, "v_max": 4.3},
                                        {"mode": "REST", "duration_s": 60.0}]],
             "kwargs": {"active_mass_g": 6.16e-3, "cadence_s": 60.0, "monitor": "i0",
                        "feedback": "xrd_reduction_lattice_change_A", "feedback_threshold": 0.01}},
            {"kwargs": {"active_mass_g": 5.0, "cadence_s": 60.0}}, "active_mass_g"),
        "gitt": (
            {"args": ["cycler"], "kwargs": {"active_mass_g": 6e-3,
                                            "protocol": {"name": "gitt", "args": {"pulse_s": 600.0, "max_titrations": 3}}}},
            {"kwargs": {"active_mass_g": 6e-3, "protocol": {"name": "cyclic_voltammetry"}}}, "unknown protocol"),
        "cycle_cell": (
            {"args": ["cycler", {"name": "galvanostatic", "args": {"rate_mA_g": 100.0, "cycles": 1}}],
             "kwargs": {"active_mass_g": 6.16e-3, "sample": {"name": "SC-NC91 coin cell"}}},
            {"kwargs": {"active_mass_g": 6.16e-3, "poll_s": 120.0}}, "poll_s"),
        "calibrate_xrd": (
            {"args": ["xrd", poni_path, "xrd_calibration_geometry"], "kwargs": {"exposure_s": 0.5}},
            {"kwargs": {"calibrant": "NaCl"}}, "calibrant must be one of"),
        "sxdm_rocking_raster": (
            {"args": ["merlin", "np_stage", "np_theta", [-0.4, 0.4], [-0.4, 0.4], 0.1, [6.0, 6.1]],
             "kwargs": {"mode": "fly", "progress": False, "geometry": sxdm_geometry, "monitor": "np_i0"}},
            {"kwargs": {"mode": "fly", "progress": False, "exposure_s": -1.0}}, "exposure_s must be > 0"),
        "find_bragg_peak": (
            {"args": ["merlin", "np_theta", [5.8, 5.9, 6.0, 6.1, 6.2]], "kwargs": {"exposure_s": 0.01}},
            {"args": ["merlin", "np_theta", [5.9, 6.0, 6.1]]}, ">= 4 angles"),
        "xrf_map": (
            {"args": ["np_xrf", "np_stage", [-1.0, 1.0], [-1.0, 1.0], 0.5], "kwargs": {"threshold": 0.4}},
            {"kwargs": {"threshold": 1.5}}, "threshold must be in"),
        "txm_xanes_2d": (
            {"args": ["txm"], "kwargs": {"angle_deg": 10.0, "exposure_s": 0.05}},
            {"kwargs": {"exposure_s": 100.0}}, "exposure_s"),
        "txm_xanes_tomo": (
            {"args": ["txm"], "kwargs": {"n_flats": 2, "sample": {"name": "NC91 particle"}}},
            {"kwargs": {"angles_deg": [float(a) for a in range(0, 90, 10)]}}, "180 deg apart"),
        "energy_calibration": (
            {"args": ["txm"], "kwargs": {"apply": False}},
            {"kwargs": {"edge_eV": 9000.0}}, "needs >= 3 energies each side"),
        "xas_scan": (
            {"args": ["dcm", "xas_ic", [{"space": "E", "start": -30.0, "stop": 30.0, "step": 1.0, "dwell_s": 0.1},
                                        {"space": "k", "start": 3.0, "stop": 12.0, "step": 0.1, "dwell_s": 0.1,
                                         "k_weight": 2.0}]],
             "kwargs": {"sample": {"name": "SC-NM91 charged"}}},
            {"kwargs": {"e0_eV": 20000.0}}, "e0_eV"),
        "xas_fly_scan": (
            {"args": ["dcm", "xas_fly", [{"space": "E", "start": -30.0, "stop": 30.0, "velocity_eV_s": 2.0},
                                         {"space": "k", "start": 3.0, "stop": 12.0, "velocity_eV_s": 20.0}]],
             "kwargs": {"interval_s": 0.1, "sample": {"name": "SC-NM91 charged"}}},
            {"kwargs": {"interval_s": 0.5}}, "crosses the edge"),
        "mount_sample": (
            {"args": ["txm", {"material": "NM91", "morphology": "SC"}], "kwargs": {"charge_V": 4.3}},
            {"args": ["txm", {"material": "NM91", "morphology": "XX"}]}, "morphology must be one of"),
    }


@pytest.fixture(scope="module")
def beamline(tmp_path_factory):
    """The profile's namespace in small: the registry's plans, the simulated devices and
    the live signals the items name."""
    from bluesky import RunEngine

    RunEngine({})  # the bluesky event loop the devices connect in
    folder = tmp_path_factory.mktemp("queue")
    devices = make_devices(detector_dir=folder / "det")
    signals = {name: soft_signal_r_and_setter(kind, name=name)[0] for name, kind in LIVE_SIGNALS.items()}
    connect_devices(signals)
    namespace = {**registry(), **devices, **signals}
    plans, existing_devices, plans_in_ns, devices_in_ns = profile_ops.existing_plans_and_devices_from_nspace(nspace=namespace)
    cases = items(str(folder / "detector.poni"), devices["merlin"].sxdm_geometry().to_metadata())
    return {"namespace": namespace, "plans": plans, "devices": existing_devices, "plans_in_ns": plans_in_ns,
            "devices_in_ns": devices_in_ns, "items": cases}


def prepared(beamline, name: str, item: dict) -> dict:
    """What the queue server's worker calls: the item as it comes over JSON, validated and
    its device names replaced by objects (`profile_ops.prepare_plan`)."""
    plan = {"name": name, "user_group": "primary", **json.loads(json.dumps(item))}
    return profile_ops.prepare_plan(
        plan, plans_in_nspace=beamline["plans_in_ns"], devices_in_nspace=beamline["devices_in_ns"],
        allowed_plans={"primary": beamline["plans"]}, allowed_devices={"primary": beamline["devices"]},
        nspace=beamline["namespace"],
    )


@pytest.mark.parametrize("name", sorted(registry()))
def test_annotations_resolve_and_defaults_are_literals(name):
    plan = registry()[name]
    hints = typing.get_type_hints(plan)
    for parameter in inspect.signature(plan).parameters.values():
        assert not isinstance(parameter.annotation, str), (name, parameter.name)
        assert parameter.annotation is not inspect.Parameter.empty, (name, parameter.name)
        assert hints[parameter.name] == parameter.annotation
        if parameter.default is not inspect.Parameter.empty:
            assert ast.literal_eval(repr(parameter.default)) == parameter.default, (name, parameter.name)
    assert typing.get_origin(hints["return"]) is collections.abc.Generator


def test_every_plan_is_described_with_its_types(beamline):
    assert set(beamline["plans"]) == set(registry())
    for name, description in beamline["plans"].items():
        for parameter in description["parameters"]:  # an untyped one would have its strings read as names
            assert "annotation" in parameter, (name, parameter["name"])
    kinds = {p["name"]: p["annotation"]["type"] for p in beamline["plans"]["operando_xrd"]["parameters"] if "annotation" in p}
    assert kinds["cycler"] == "__MOVABLE__" and kinds["detector"] == "__READABLE__"
    assert kinds["feedback"] == "typing.Optional[__READABLE__]" or kinds["feedback"] == "__READABLE__ | None"


@pytest.mark.parametrize("name", sorted(registry()))
def test_a_json_item_is_accepted_by_the_queue_and_by_the_plan(beamline, name):
    item, bad, message = beamline["items"][name]
    ok, error = profile_ops.validate_plan({"name": name, **item}, allowed_plans=beamline["plans"],
                                          allowed_devices=beamline["devices"])
    assert ok, error
    call = prepared(beamline, name, item)
    assert call["callable"] is registry()[name]
    devices = beamline["namespace"]
    assert call["args"][0] is devices[item["args"][0]]  # the name became the device
    validate(name, *call["args"], **call["kwargs"])
    bad_item = {"args": item["args"], "kwargs": {**item.get("kwargs", {}), **bad.get("kwargs", {})}} if "kwargs" in bad else bad
    call = prepared(beamline, name, bad_item)
    with pytest.raises(PlanArgumentError, match=message):
        validate(name, *call["args"], **call["kwargs"])


def test_the_queue_refuses_a_wrong_json_type(beamline):
    item = {"name": "alignment_scan", "args": ["cam", "sx", -1.0, 1.0, "eleven"]}
    ok, error = profile_ops.validate_plan(item, allowed_plans=beamline["plans"], allowed_devices=beamline["devices"])
    assert not ok and "num" in error


def test_a_feedback_name_becomes_the_live_signal(beamline):
    item, _, _ = beamline["items"]["operando_xrd"]
    call = prepared(beamline, "operando_xrd", item)
    feedback = call["kwargs"]["feedback"]
    assert feedback is beamline["namespace"]["xrd_reduction_lattice_change_A"] and isinstance(feedback, Readable)


def test_a_name_the_queue_did_not_resolve_is_refused_by_the_plan(beamline):
    devices = beamline["namespace"]
    with pytest.raises(PlanArgumentError, match="feedback must be a readable"):
        validate("operando_xrd", devices["cycler"], devices["xrd"], galvanostatic(100.0), active_mass_g=6e-3,
                 cadence_s=60.0, feedback="xrd_reduction_lattice_change_A", feedback_threshold=0.01)


def test_validate_refuses_an_unknown_plan_and_unbound_arguments(beamline):
    with pytest.raises(PlanArgumentError, match="unknown plan"):
        validate("count")
    with pytest.raises(PlanArgumentError, match="gitt: missing a required argument"):
        validate("gitt", active_mass_g=6e-3)


def test_validate_moves_nothing(beamline):
    theta = beamline["namespace"]["np_theta"]
    from bluesky.run_engine import call_in_bluesky_event_loop

    before = call_in_bluesky_event_loop(theta.locate())["readback"]
    validate("find_bragg_peak", beamline["namespace"]["merlin"], theta, [before + 1, before + 2, before + 3, before + 4])
    assert call_in_bluesky_event_loop(theta.locate())["readback"] == before


# --- protocols as JSON -------------------------------------------------------------------


def test_step_dicts_and_named_protocols_resolve_to_the_builders_steps():
    steps = galvanostatic(100.0, cycles=2, v_max=4.3)
    as_json = json.loads(json.dumps([vars(step) for step in steps]))
    assert resolve_protocol(as_json) == steps
    assert resolve_protocol(steps) == steps
    assert resolve_protocol({"name": "gitt", "args": {"pulse_s": 600.0, "max_titrations": 2}}) == gitt_protocol(
        pulse_s=600.0, max_titrations=2)
    assert resolve_protocol([{"mode": "REST", "duration_s": 5.0}]) == (ProtocolStep("REST", duration_s=5.0),)


@pytest.mark.parametrize(
    "spec, message",
    [
        ([], "non-empty sequence"),
        ("galvanostatic", "non-empty sequence"),
        ([{"mode": "CC_CHARGE", "rate": 100.0}], "unknown: \\['rate'\\]"),
        ([{"rate_mA_g": 100.0}], "include 'mode'"),
        ([{"mode": "CC_CHARGE", "rate_mA_g": 1e6}], "rate_mA_g"),
        ({"name": "galvanostatic", "args": {"rate": 1}}, "unexpected keyword argument 'rate'"),
        ({"name": "galvanostatic", "args": [100]}, "must be a dict"),
        ({"protocol": "gitt"}, "a named protocol is"),
    ],
)
def test_bad_protocol_json_is_refused(spec, message):
    with pytest.raises(PlanArgumentError, match=message):
        resolve_protocol(spec)


def test_a_bad_sxdm_geometry_dict_is_refused(beamline):
    devices = beamline["namespace"]
    geometry = {**devices["merlin"].sxdm_geometry().to_metadata(), "wavelength": 1.0}
    with pytest.raises(PlanArgumentError, match="not an SxdmGeometry record"):
        validate("sxdm_rocking_raster", devices["merlin"], devices["np_stage"], devices["np_theta"],
                 [-0.4, 0.4], [-0.4, 0.4], 0.1, [6.0, 6.1], geometry=geometry)


def test_a_queued_run_records_sample_md_and_plan_args(beamline):
    from bluesky import RunEngine

    item = {"args": ["cam", "sx", -1.0, 1.0, 5], "kwargs": {"monitor": "i0", "exposure_s": 0.01,
                                                            "sample": {"name": "pinhole"}, "md": {"operator": "queue"}}}
    call = prepared(beamline, "alignment_scan", item)
    starts = []
    RunEngine({})(call["callable"](*call["args"], **call["kwargs"]), lambda name, doc: starts.append(doc) if name == "start" else None)
    (start,) = starts
    devices = beamline["namespace"]
    assert start["plan_name"] == "alignment_scan" and start["sample"] == {"name": "pinhole"} and start["operator"] == "queue"
    assert start["plan_args"] == {"cam": repr(devices["cam"]), "stage": repr(devices["sx"]), "start_mm": -1.0, "stop_mm": 1.0,
                                  "num": 5, "monitor": repr(devices["i0"]), "exposure_s": 0.01,
                                  "limits_mm": [-10.0, 10.0], "sample": {"name": "pinhole"}}
