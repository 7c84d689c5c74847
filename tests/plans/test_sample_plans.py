"""`mount_sample`: one JSON sample schema for every instrument; a bad sample is refused
before anything moves; on the twins the particle, cell or calibrant it names is what the
beam sees next, on real devices it is only recorded (tests/core/test_beamline.py)."""

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop as now

from nanostrain.beamline import make_devices
from nanostrain.plans import registry
from nanostrain.plans.samples import mount_sample, validate_mount_sample
from nanostrain.plans.validation import PlanArgumentError
from nanostrain.schema.cycler import CyclerMode, CyclerStep
from nanostrain.schema.sample import SampleRecord, sample_record
from nanostrain.sim.cathode import charged_particle
from nanostrain.sim.nanoprobe import bragg_angle_003
from nanostrain.sim.txm import particle_sample


@pytest.fixture
def beamline(RE, tmp_path):
    return make_devices(sim=True, detector_dir=tmp_path / "detectors")


def test_the_sample_schema_reads_a_cathode_its_state_and_the_calibrant():
    record = sample_record({"material": "NM91", "morphology": "SC", "state": {"charge_V": 4.3, "cycles": 100}})
    assert record == SampleRecord(name="SC-NM91", material="NM91", morphology="SC", charge_V=4.3,
                                  current_mA_g=200.0, cycles=100)
    assert sample_record({"material": "NM91", "state": {"cycles": 100}}, cycles=5, charge_V=4.2).cycles == 5
    assert sample_record("CeO2") == sample_record({"calibrant": "CeO2"})
    assert sample_record("CeO2").is_calibrant and not record.is_calibrant
    assert SampleRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(("sample", "state", "match"), [
    ({"material": "NM91", "colour": "red"}, {}, "unknown sample keys"),
    ({"material": "NM91", "morphology": "XL"}, {}, "morphology"),
    ({"morphology": "SC"}, {}, "needs 'material'"),
    ({"material": "NM91"}, {"temperature_K": 300}, "unknown state keys"),
    ({"material": "NM91"}, {"current_mA_g": 100.0}, "give charge_V too"),
    ({"material": "NM91"}, {"charge_V": 9.0}, "2.5-4.8 V"),
    ({"material": "NM91"}, {"cycles": -1}, "cycles"),
    ("Si", {}, "unknown calibrant"),
    ("CeO2", {"cycles": 1}, "only 'calibrant'"),
])
def test_a_bad_sample_is_refused_before_the_first_message(sim_devices, sample, state, match):
    plan = mount_sample(sim_devices["txm"], sample, **state)
    with pytest.raises(PlanArgumentError, match=match):
        next(plan)
    with pytest.raises(PlanArgumentError, match=match):
        validate_mount_sample(sample, **state)


def test_a_device_without_a_sample_signal_is_refused(beamline):
    with pytest.raises(PlanArgumentError, match="device must be a sample holder.*np_stage.*lacks SampleHolder"):
        next(mount_sample(beamline["np_stage"], {"material": "NM91"}))


def test_mount_sample_is_in_the_plan_registry():
    assert registry()["mount_sample"] is mount_sample


def test_a_cell_mounted_on_the_cycler_is_the_one_the_xrd_sees_and_every_descriptor_records(RE, beamline):
    cycler, xrd = beamline["cycler"], beamline["xrd"]
    sample = {"material": "NM91", "morphology": "PC"}
    RE(mount_sample(cycler, sample))
    assert cycler.engine.particle.material.name == "NM91"
    assert cycler.engine.particle.morphology.name == "PC"
    assert xrd._scene.sample is cycler.engine.particle
    assert now(xrd.sample.get_value()) == "NM91 PC"
    assert SampleRecord.from_json(now(xrd.mounted_sample.get_value())) == sample_record(sample)
    docs = []
    RE(bp.count([cycler]), lambda name, doc: docs.append((name, doc)))
    descriptor = next(doc for name, doc in docs if name == "descriptor")
    assert SampleRecord.from_json(descriptor["configuration"]["cycler"]["data"]["cycler-mounted_sample"]) == sample_record(sample)


def test_the_cycler_refuses_a_new_cell_while_a_step_runs(RE, beamline):
    cycler = beamline["cycler"]
    RE(bps.mv(cycler.time_scale, 1.0))  # the step outlasts the test

    def plan():
        yield from bps.abs_set(cycler, CyclerStep(CyclerMode.CC_CHARGE, current_mA=0.1), group="step")
        yield from bps.sleep(0.2)
        yield from mount_sample(cycler, {"material": "NM91"})

    with pytest.raises(Exception, match="a step is running"):
        RE(plan())
    now(cycler.stop(success=True))
    assert cycler.engine.particle.material.name == "NC91"


def test_the_xrd_twin_takes_the_calibrant_and_back_a_cathode(RE, beamline):
    xrd = beamline["xrd"]
    RE(mount_sample(xrd, "CeO2"))
    assert xrd._scene.sample == "CeO2" and now(xrd.sample.get_value()).startswith("CeO2")
    assert SampleRecord.from_json(now(xrd.mounted_sample.get_value())).calibrant == "CeO2"
    RE(mount_sample(xrd, {"material": "NC91"}, charge_V=4.3))
    lattice = xrd._scene.sample.lattice()
    assert lattice.c_A == pytest.approx(charged_particle("NC91", 200.0, 4.3).lattice().c_A)


def test_the_txm_twin_voxelises_the_particle_it_is_given(RE, beamline):
    txm = beamline["txm"]
    RE(mount_sample(txm, {"material": "NC91", "state": {"charge_V": 4.3, "current_mA_g": 200.0}}))
    rows, cols = txm.camera.frame_shape
    expected = particle_sample(charged_particle("NC91", 200.0, 4.3), (rows, cols, cols), txm.pixel_size_um)
    np.testing.assert_array_equal(txm.specimen.whiteline_eV, expected.whiteline_eV)
    assert SampleRecord.from_json(now(txm.mounted_sample.get_value())).material == "NC91"


def test_the_nanoprobe_twin_mounts_the_particle_and_points_its_arm_at_its_003(RE, beamline):
    merlin = beamline["merlin"]
    before = merlin.sxdm_geometry().two_theta_deg
    RE(mount_sample(merlin, {"material": "NC91"}))  # pristine: larger d(003) than charged NM91
    c_A = charged_particle("NC91", 200.0, 2.5).lattice().mean_c_A  # stop at once: pristine
    expected = 2.0 * float(bragg_angle_003(c_A, merlin.sxdm_geometry().energy_eV))
    assert merlin.sxdm_geometry().two_theta_deg == pytest.approx(expected)
    assert merlin.simulation.geometry.two_theta_deg == pytest.approx(expected)
    assert expected < before
    assert beamline["np_xrf"].simulation.crystal is merlin.simulation.crystal


@pytest.mark.parametrize("name", ["txm", "merlin"])
def test_imaging_twins_refuse_the_calibrant(RE, beamline, name):
    with pytest.raises(Exception, match="takes a cathode particle"):
        RE(mount_sample(beamline[name], "CeO2"))
