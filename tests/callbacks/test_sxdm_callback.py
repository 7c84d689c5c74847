"""The live SXDM analysis on rocking rasters of a crystal with a known d / rotation field.

Frames come from the simulated nanoprobe (Poisson noise, background, drift of the
rotation axis between angles) through `sxdm_rocking_raster` (fly and step) and the RunEngine;
`SxdmCallback` reads them from the detector's HDF5 files as they are written and must
return the field: dd/d within 5e-5 and rotations within 0.005 deg over the particle.
The drift is a whole number of raster steps per angle (so the registered maps are the
true maps, not interpolations of them) and settles in the rocking-curve tails, whose
maps are too faint to register (they take the shift of the nearest bright angle).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop
from event_model import compose_run

from nanostrain.analysis.sxdm_geometry import bragg_angle
from nanostrain.beamline import connect_devices, detector_path_provider
from nanostrain.callbacks.frames import FrameSource, resource_path
from nanostrain.callbacks.sxdm import SxdmCallback
from nanostrain.callbacks.sxdm_plots import SxdmLivePlot, maps_figure, sigma_figure
from nanostrain.devices.nanoprobe import make_sim_nanoprobe
from nanostrain.plans.sxdm import sxdm_rocking_raster
from nanostrain.sim.nanoprobe import NanoprobeSimulation, ProjectedCrystal

STRAIN_TOL = 5e-5
TILT_TOL_DEG = 0.005
D0_A = 14.0 / 3.0
STEP_UM = 0.05
BACKGROUND = 0.1  # counts per pixel per frame: 10 counts/s x 0.01 s
SEED = 3


def known_field(n: int, margin: float) -> dict[str, np.ndarray]:
    """A platelet 4 um thick (every particle pixel ~500 counts at the Bragg peak) of radius
    (n - 1) / 2 - margin raster steps (a margin wider than the drift: no frame of the
    particle falls outside the raster): strain rising to 1e-3 at its rim (core-shell), a
    region rotated +0.03 deg in Qx-Qy, one -0.04 deg in Qx-Qz."""
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    radius = (n - 1) / 2.0 - margin
    r = np.hypot(y, x) / radius
    return {
        "thickness": np.where(r <= 1.0, 4.0, 0.0),
        "d": D0_A * (1.0 + 1e-3 * r**2),
        "theta_xy": np.where((x > 1) & (y < -1), 0.03, 0.0),
        "theta_xz": np.where((x < -1) & (y > 1), -0.04, 0.0),
    }


def drift_steps(offset: np.ndarray) -> np.ndarray:
    """Drift (rows, cols) in raster steps at rocking offsets -1..1 (of the +-0.5 deg range):
    up to 2 steps, changing near the Bragg angle, constant in the tails."""
    ramp = np.tanh(2.5 * np.asarray(offset, dtype=np.float64))
    return np.stack([np.round(2.0 * ramp), -np.round(1.5 * ramp)], axis=-1)


def whole_step_drift(theta_centre: float):
    """The simulation's drift model: `drift_steps` in um."""

    def drift(theta_deg: float) -> tuple[float, float]:
        dy, dx = STEP_UM * drift_steps((theta_deg - theta_centre) / 0.5)
        return float(dy), float(dx)

    return drift


@pytest.fixture
def instrument(RE, tmp_path):
    """The simulated nanoprobe looking at the known field on an n x n raster at (0, 0),
    with drift (`whole_step_drift`) or without."""

    def build(n: int, drift: bool = True):
        field = known_field(n, margin=2.5 if drift else 0.5)
        origin = (-(n - 1) / 2.0 * STEP_UM, -(n - 1) / 2.0 * STEP_UM)
        crystal = ProjectedCrystal.from_maps(
            field["d"], field["theta_xy"], field["theta_xz"], field["thickness"], origin, STEP_UM
        )
        simulation = NanoprobeSimulation(crystal=crystal, seed=SEED)
        simulation.point_detector_at(3.0 * D0_A)
        theta_b = float(bragg_angle(D0_A, simulation.geometry.energy_eV))
        simulation.drift = whole_step_drift(theta_b) if drift else (lambda theta_deg: (0.0, 0.0))
        devices = make_sim_nanoprobe(detector_path_provider(tmp_path / "det"), simulation)
        connect_devices(devices)
        return devices, field, theta_b, origin

    return build


def run_raster(RE, devices, origin, n, thetas, mode, callback, **kwargs):
    docs = []
    RE.subscribe(callback)
    span = (origin[0], origin[0] + (n - 1) * STEP_UM)
    (uid,) = RE(
        sxdm_rocking_raster(devices["merlin"], devices["np_stage"], devices["np_theta"], span, span, STEP_UM,
                            thetas, mode, background=BACKGROUND, progress=False, **kwargs),
        lambda name, doc: docs.append((name, doc)),
    )
    return uid, docs


def assert_recovers(maps, field) -> None:
    inside = maps.mask
    np.testing.assert_array_equal(inside, field["thickness"] > 0)
    d_ref = np.median(field["d"][inside])
    np.testing.assert_array_less(np.abs(maps.dd_over_d - (field["d"] / d_ref - 1))[inside], STRAIN_TOL)
    for name in ("theta_xy", "theta_xz"):
        expected = field[name] - np.median(field[name][inside])
        np.testing.assert_array_less(np.abs(getattr(maps, name) - expected)[inside], TILT_TOL_DEG)


@pytest.mark.slow
def test_fly_raster_recovers_a_known_strain_and_rotation_field(RE, instrument):
    n = 13
    devices, field, theta_b, origin = instrument(n)
    callback = SxdmCallback()
    run_raster(RE, devices, origin, n, theta_b + np.linspace(-0.5, 0.5, 11), "fly", callback)
    assert_recovers(callback.maps, field)
    # registration undid the drift (shifts in the frame of the brightest, central angle)
    np.testing.assert_allclose(callback.maps.shifts_px, -drift_steps(np.linspace(-1, 1, 11)), atol=0.1)


@pytest.mark.slow
def test_step_raster_recovers_the_field_and_publishes_each_angle(RE, instrument):
    n = 8
    devices, field, theta_b, origin = instrument(n, drift=False)
    thetas = theta_b + np.linspace(-0.5, 0.5, 9)
    callback = SxdmCallback()
    published = []
    callback.subscribe(lambda name, doc: published.append((name, doc)))
    run_raster(RE, devices, origin, n, thetas, "step", callback)
    assert_recovers(callback.maps, field)

    streams = {doc["uid"]: doc["name"] for name, doc in published if name == "descriptor"}
    events = [(streams[doc["descriptor"]], doc["data"]) for name, doc in published if name == "event"]
    angles = [data for stream, data in events if stream == "angles"]
    assert [a["theta_index"] for a in angles] == list(range(9))
    assert np.allclose([a["theta_deg"] for a in angles], thetas)
    total = np.sum([a["intensity_angle"] for a in angles], axis=0)
    np.testing.assert_allclose(angles[-1]["intensity"], total, rtol=1e-9)  # running = sum of angles
    (maps,) = [data for stream, data in events if stream == "maps"]
    assert maps["sigma_dd_over_d"] == pytest.approx(callback.maps.sigma.dd_over_d)
    assert len([1 for stream, _ in events if stream == "registration"]) == 9
    signal = call_in_bluesky_event_loop(callback.signals["sigma_strain"].get_value())
    assert signal == pytest.approx(maps["sigma_dd_over_d"])
    assert call_in_bluesky_event_loop(callback.signals["angles_done"].get_value()) == 9


class ReplayedFrames(FrameSource):
    """Frames of a finished run read from its HDF5 file (frame n - 1 is seq_num n)."""

    def __init__(self, docs):
        (resource,) = [doc for name, doc in docs if name == "stream_resource"]
        with h5py.File(resource_path(resource), "r") as handle:
            self.frames = handle[resource["parameters"]["dataset"]][()]

    def iter_frames(self, stream, resource, datum):
        for seq_num in range(datum["seq_nums"]["start"], datum["seq_nums"]["stop"]):
            yield seq_num, self.frames[seq_num - 1]


def test_replay_order_gives_identical_maps_holding_no_frames(RE, instrument):
    """Replay from the catalog sends every event first and the frames after: the maps must
    be bit-identical to the live ones, and no frame may wait in memory (state is fixed)."""
    n = 6
    devices, _, theta_b, origin = instrument(n, drift=False)
    live = SxdmCallback(batch_frames=8)
    _, docs = run_raster(RE, devices, origin, n, theta_b + np.linspace(-0.5, 0.5, 7), "step", live)
    assert live.accumulator.nbytes == 7 * n * n * 4 * 8  # four sums per angle and pixel

    replayed = SxdmCallback(batch_frames=8, frame_source=ReplayedFrames(docs))
    late = ("stream_datum", "stop")
    for name, doc in [d for d in docs if d[0] not in late] + [d for d in docs if d[0] in late]:
        replayed(name, doc)
        assert not replayed._frames and len(replayed._batch) < 8
    for name in ("dd_over_d", "theta_xy", "theta_xz", "intensity"):
        np.testing.assert_array_equal(getattr(replayed.maps, name), getattr(live.maps, name))


def test_parameters_are_the_json_constructor_arguments_that_rebuild_the_analysis():
    callback = SxdmCallback(batch_frames=np.int64(8), registration=np.bool_(False), mask_fraction=np.float32(0.25),
                            d_ref_A=np.float64(4.7), image_key="merlin", stream="primary")
    parameters = callback.parameters()
    assert json.loads(json.dumps(parameters)) == parameters == {
        "image_key": "merlin", "stream": "primary", "batch_frames": 8, "registration": False,
        "mask_fraction": 0.25, "d_ref_A": 4.7,
    }
    assert SxdmCallback(**parameters).parameters() == parameters
    assert SxdmCallback().parameters()["d_ref_A"] is None


def test_other_techniques_are_ignored_and_bad_metadata_is_refused():
    callback = SxdmCallback()
    callback("start", {"uid": "a", "time": 0.0, "technique": "xrd", "image_key": "det"})
    assert not callback.active and callback.derived is None
    with pytest.raises(ValueError, match="sxdm_geometry"):
        callback("start", {"uid": "b", "time": 0.0, "technique": "sxdm", "image_key": "det"})


def test_figures_draw_live_and_final_maps_and_sigma_bars():
    rng = np.random.default_rng(0)
    maps = {name: rng.normal(0, 1e-3, (6, 6)) for name in ("intensity", "dd_over_d", "theta_xy", "theta_xz")}
    maps["mask"] = np.ones((6, 6), dtype=np.uint8)
    bundle = compose_run(metadata={"analysis": "sxdm_strain"})
    plot = SxdmLivePlot(step_um=STEP_UM)
    plot("start", bundle.start_doc)
    for stream, data in (("angles", {"theta_index": 0, "theta_deg": 6.3, "intensity_angle": maps["intensity"], **maps}),
                         ("maps", maps)):
        descriptor = bundle.compose_descriptor(
            name=stream, data_keys={k: {"dtype": "array", "shape": list(np.shape(v)), "source": "test"} for k, v in data.items()}
        )
        plot("descriptor", descriptor.descriptor_doc)
        plot("event", descriptor.compose_event(data=data, timestamps={k: 0.0 for k in data}))
        assert len(plot.figure.axes) == 6  # three maps and their colour bars
    (image,) = plot.figure.axes[0].images
    np.testing.assert_allclose(image.get_array(), 1e3 * maps["dd_over_d"])  # the final dd/d panel, in 10^-3
    sigmas = {"a": {"sigma_dd_over_d": 1e-3, "sigma_theta_xy_deg": 0.01, "sigma_theta_xz_deg": 0.02},
              "b": {"sigma_dd_over_d": 3e-3, "sigma_theta_xy_deg": 0.01, "sigma_theta_xz_deg": 0.01}}
    figure = sigma_figure(sigmas)
    assert [patch.get_height() for patch in figure.axes[0].patches] == pytest.approx([1.0, 3.0])  # in 10^-3
    other = {**maps, "dd_over_d": 3 * maps["dd_over_d"]}
    figure = maps_figure({"a": maps, "b": other})
    assert len(figure.axes) == 9  # two samples x three maps, one colour bar per column
    (dd_a,), (dd_b,) = figure.axes[0].images, figure.axes[3].images
    assert dd_a.get_clim() == dd_b.get_clim()  # compared panels share one scale
