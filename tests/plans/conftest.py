"""Fixtures of the plan tests: the simulated beamline's devices."""

import pytest

from nanostrain.beamline import make_devices


@pytest.fixture(scope="module")
def sim_devices(tmp_path_factory) -> dict:
    """Every device of the simulated beamline (`nanostrain.beamline.make_devices`),
    connected on the bluesky event loop, shared by one test module."""
    from bluesky import RunEngine

    RunEngine({})  # the bluesky event loop the devices connect in
    return make_devices(detector_dir=tmp_path_factory.mktemp("detectors"))
