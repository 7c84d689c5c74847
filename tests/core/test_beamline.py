"""The beamline's device factories (`nanostrain.beamline`): lazy, injected by name, errors
reported together, real devices from TOML; the simulated beamline comes ready (samples
mounted, its clock set by config or plan)."""

from pathlib import Path

import bluesky.plan_stubs as bps
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop as now

from nanostrain.beamline import (
    SIM_BEAMLINE,
    SIM_CELL,
    SIM_TIME_SCALE,
    DeviceBuildError,
    DeviceManager,
    beamline_spec,
    connect_devices,
    detector_path_provider,
    load_config,
    make_devices,
    real_devices,
)
from nanostrain.schema.sample import SampleRecord

EXAMPLE = Path(__file__).resolve().parents[2] / "profile" / "beamline.example.toml"
SIM_NAMES = {"sx", "i0", "cam", "cycler", "xrd", "np_stage", "np_theta", "merlin", "np_xrf", "np_i0", "txm", "dcm",
             "xas_ic", "xas_fly", "ring_current", "shutter"}


def test_the_simulated_beamline_has_a_cell_mounted_and_its_clock_set(RE, tmp_path):
    devices = make_devices(sim=True, detector_dir=tmp_path / "detectors")
    assert set(devices) == SIM_NAMES
    cycler, xrd = devices["cycler"], devices["xrd"]
    assert now(cycler.time_scale.get_value()) == SIM_TIME_SCALE == 600.0
    assert cycler.engine.particle.material.name == SIM_CELL.material == "NC91"
    assert xrd._scene.sample is cycler.engine.particle  # one cell, injected into both
    assert SampleRecord.from_json(now(xrd.mounted_sample.get_value())) == SIM_CELL
    assert SampleRecord.from_json(now(cycler.mounted_sample.get_value())) == SIM_CELL
    for name in ("merlin", "txm", "xas_ic"):  # the other twins have a particle in their beam too
        assert SampleRecord.from_json(now(devices[name].mounted_sample.get_value())).material == "NM91"
    assert devices["merlin"].simulation.crystal is not None


def test_the_clock_is_set_by_the_beamline_config_and_by_a_plan(RE, tmp_path):
    devices = make_devices(sim=True, detector_dir=tmp_path, config={"sim": {"time_scale": 1234.0}})
    cycler = devices["cycler"]
    assert now(cycler.time_scale.get_value()) == 1234.0
    RE(bps.mv(cycler.time_scale, 50.0))
    assert now(cycler.time_scale.get_value()) == 50.0
    with pytest.raises(ValueError, match="unknown keys.*clock"):
        make_devices(sim=True, detector_dir=tmp_path, config={"sim": {"clock": 1.0}}, connect=False)


def test_factories_are_lazy_and_get_their_dependencies_by_parameter_name():
    manager, calls = DeviceManager(), []

    @manager.fixture
    def shared():
        calls.append("shared")
        return object()

    @manager.factory
    def a(shared, scale):
        calls.append("a")
        return ("a", shared, scale)

    @manager.factory
    def b(a, shared):
        calls.append("b")
        return ("b", a, shared)

    @manager.factory
    def c():
        calls.append("c")
        return "c"

    built = manager.build(["b"], scale=2)
    assert set(built) == {"b"} and calls == ["shared", "a", "b"]  # c never built, shared once
    assert built["b"][1] == ("a", built["b"][2], 2)  # the same fixture object in a and b
    with pytest.raises(DeviceBuildError, match="nothing provides 'scale'"):
        manager.build(["a"])


def test_every_failed_device_is_reported_in_one_error():
    manager, calls = DeviceManager(), []

    @manager.factory
    def good():
        return "ok"

    @manager.factory
    def bad_one():
        calls.append("bad_one")
        raise RuntimeError("IOC down")

    @manager.factory
    def bad_two(bad_one):
        return bad_one

    @manager.factory
    def bad_three():
        raise ValueError("no prefix")

    @manager.factory
    def lookup():
        return {}["missing"]  # a KeyError inside a factory is its own failure

    with pytest.raises(DeviceBuildError) as info:
        manager.build(["bad_two", "good", "bad_one", "bad_three", "lookup"])
    assert list(info.value.errors) == ["bad_one", "bad_two", "bad_three", "lookup"]
    assert calls.count("bad_one") == 1  # built once, though two asked for it
    message = str(info.value)
    assert "4 device(s) failed" in message and "IOC down" in message and "no prefix" in message
    assert "bad_two: needs 'bad_one', which failed" in message
    assert isinstance(info.value.errors["lookup"], KeyError)


def test_connection_errors_are_collected(RE, tmp_path):
    config = {"devices": {
        "cycler": {"class": "nanostrain.devices.cycler:EpicsCycler", "prefix": "NSNOIOC1:"},
        "np_i0": {"class": "nanostrain.devices.nanoprobe:IonChamber", "prefix": "NSNOIOC2:"},
        "txm": {"sim": True},
    }}
    devices = real_devices(config, detector_path_provider(tmp_path))
    with pytest.raises(DeviceBuildError) as info:
        connect_devices(devices, timeout=0.5)
    assert set(info.value.errors) == {"cycler", "np_i0"}  # the twin connected
    lines = str(info.value).splitlines()
    assert len(lines) == 3  # a headline, one line per device
    assert "PV(s) not connected, e.g. ca://NSNOIOC1:" in lines[1] and "ca://NSNOIOC2:Flux" in lines[2]


def test_build_and_connect_reports_per_device_as_blueapi_expects(RE, tmp_path):
    """blueapi's deviceManager interface: what built and connected, and the others'
    errors by name, without raising."""
    config = {"devices": {
        "cycler": {"class": "nanostrain.devices.cycler:EpicsCycler", "prefix": "NSNOIOC3:"},
        "np_i0": {"class": "nanostrain.devices.nanoprobe:IonChamber", "prefix": "NSNOIOC4:", "mock": True},
        "txm": {"sim": True},
        "xrd": {"class": "nanostrain.devices.xrd:NoSuchDetector", "prefix": "NSNOIOC5:"},
    }}
    spec = beamline_spec(False, config)
    result = SIM_BEAMLINE.build_and_connect(
        timeout=0.5, fixtures={"path_provider": detector_path_provider(tmp_path), **spec.values},
        names=spec.names, overrides=spec.overrides, mock_names=spec.mock_names)
    assert set(result.devices) == {"np_i0", "txm"}  # mock mode for np_i0, the twin itself
    assert set(result.build_errors) == {"xrd"} and isinstance(result.build_errors["xrd"], AttributeError)
    assert set(result.connection_errors) == {"cycler"}


def test_the_example_beamline_builds_every_techniques_real_classes_in_mock_mode(RE, tmp_path):
    from nanostrain.devices.cycler import EpicsCycler
    from nanostrain.devices.nanoprobe import EigerPixelDetector, IonChamber, MerlinPixelDetector, NanoprobeScanner
    from nanostrain.devices.nanoprobe import XrfRoiCounter
    from nanostrain.devices.dcm import DcmEnergy
    from nanostrain.devices.txm import EpicsTxm
    from nanostrain.devices.xas import EpicsIonChambers
    from nanostrain.devices.xrd import PerkinElmerDetector
    from nanostrain.plans.samples import mount_sample

    config = load_config(EXAMPLE)
    devices = make_devices(sim=False, detector_dir=tmp_path, config=EXAMPLE, mock=True)
    assert set(devices) == set(config["devices"])
    expected = {"cycler": EpicsCycler, "xrd": PerkinElmerDetector, "i0": IonChamber, "np_stage": NanoprobeScanner,
                "merlin": MerlinPixelDetector, "eiger": EigerPixelDetector, "np_xrf": XrfRoiCounter,
                "np_i0": IonChamber, "txm": EpicsTxm, "dcm": DcmEnergy, "xas_ic": EpicsIonChambers}
    for name, cls in expected.items():
        assert type(devices[name]) is cls, name
    assert devices["cycler"].potential.source.startswith("mock+ca://XF:17BM-ES{Cycler:1}")
    # on a real device mounting a sample only records it
    RE(mount_sample(devices["xrd"], "CeO2"))
    assert SampleRecord.from_json(now(devices["xrd"].mounted_sample.get_value())).calibrant == "CeO2"


def test_a_config_naming_no_class_is_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[devices.xrd]\nprefix = "X:"\n')
    with pytest.raises(ValueError, match="'xrd' has no 'class'"):
        load_config(bad)
    with pytest.raises(ValueError, match="'gun' has no simulated twin"):
        real_devices({"devices": {"gun": {"sim": True}}}, detector_path_provider(tmp_path))
