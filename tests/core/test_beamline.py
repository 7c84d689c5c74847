"""The simulated beamline comes ready for its plans: a coin cell mounted on the cycler and
the XRD detector, and a simulated clock the operando plan can keep its cadence with."""

from __future__ import annotations

from bluesky.run_engine import call_in_bluesky_event_loop

from nanostrain.beamline import SIM_CELL, SIM_TIME_SCALE, make_devices


def test_the_simulated_beamline_has_a_cell_mounted_and_its_clock_set(RE, tmp_path):
    devices = make_devices(sim=True, detector_dir=tmp_path / "detectors")
    cycler, xrd = devices["cycler"], devices["xrd"]
    assert call_in_bluesky_event_loop(cycler.time_scale.get_value()) == SIM_TIME_SCALE == 600.0
    material, morphology = SIM_CELL
    assert cycler.engine.particle.material.name == material
    assert call_in_bluesky_event_loop(xrd.sample.get_value()) == f"{material} {morphology}"
