"""SXDM plans on the simulated nanoprobe: argument checks before any message, soft limits
before any motion, the documents a raster writes (step and fly), and the known answers of
the particle search (fluorescence centroid) and the Bragg-peak search (rocking-curve fit)."""

from __future__ import annotations

from dataclasses import asdict

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop

from nanostrain.analysis.sxdm_geometry import SxdmGeometry, bragg_angle
from nanostrain.beamline import connect_devices, detector_path_provider
from nanostrain.devices.nanoprobe import make_sim_nanoprobe
from nanostrain.plans.sxdm import (
    ANGLE_OVERHEAD_S,
    LINE_OVERHEAD_S,
    STEP_OVERHEAD_S,
    estimate_duration_s,
    find_bragg_peak,
    sxdm_rocking_raster,
    xrf_map,
)
from nanostrain.plans.validation import PlanArgumentError
from nanostrain.schema.start import StartDocumentError
from nanostrain.sim.cathode import CathodeParticle
from nanostrain.sim.nanoprobe import NanoprobeSimulation, ProjectedCrystal, project_particle

D_A = 14.0 / 3.0
THETA_XZ = 0.05  # deg: a rotation the rocking scan must see
STEP = 0.1


def uniform_platelet(radius_um: float = 1.0, centre_um=(0.0, 0.0)) -> ProjectedCrystal:
    """A 2 um thick platelet of uniform d = D_A and rotation theta_xz = THETA_XZ."""
    n = 41
    axis = (np.arange(n) - (n - 1) / 2) * 0.1
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    thickness = np.where(np.hypot(yy, xx) <= radius_um, 2.0, 0.0)
    origin = (centre_um[0] + axis[0], centre_um[1] + axis[0])
    return ProjectedCrystal.from_maps(np.full((n, n), D_A), 0.0, THETA_XZ, thickness, origin, 0.1)


@pytest.fixture
def nanoprobe(RE, tmp_path):
    simulation = NanoprobeSimulation(crystal=uniform_platelet(), seed=2)
    simulation.point_detector_at(3 * D_A)
    devices = make_sim_nanoprobe(detector_path_provider(tmp_path / "det"), simulation)
    connect_devices(devices)
    return devices


def raster(devices, **overrides):
    kwargs = dict(x=(-0.2, 0.2), y=(-0.2, 0.2), step=STEP, thetas=[6.0, 6.1], mode="step", progress=False)
    kwargs.update(overrides)
    return sxdm_rocking_raster(devices["merlin"], devices["np_stage"], devices["np_theta"], **kwargs)


def collect(RE, plan):
    """Run ``plan``; return what the plan returned and the documents."""
    docs, returned = [], []

    def keep_result():
        returned.append((yield from plan))

    RE(keep_result(), lambda name, doc: docs.append((name, doc)))
    return returned[0], docs


def of(docs, name):
    return [doc for n, doc in docs if n == name]


# --- arguments refused before the first message -------------------------------------------


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"mode": "zigzag"}, "mode"),
        ({"step": 0.0}, "step"),
        ({"step": -0.1}, "step"),
        ({"x": (-0.2, 0.25)}, "multiple of the step"),
        ({"x": (-0.2,)}, "start, stop"),
        ({"y": (49.8, 50.2)}, "soft limits"),
        ({"thetas": [6.0, 80.0]}, "theta"),
        ({"thetas": [6.0, 6.0]}, "repeat"),
        ({"thetas": [6.0, float("nan")]}, "finite"),
        ({"thetas": []}, "thetas must hold between 1 and"),
        ({"exposure_s": 0.0}, "exposure_s"),
        ({"deadtime_s": -1e-3}, "deadtime_s"),
        ({"x": (0.0, 0.0), "y": (-2.0, 2.0), "mode": "fly"}, "2 points per row"),
        ({"x": (0.0, 0.3), "y": (0.0, 0.3)}, "at least 17"),
        ({"x": (49.6, 50.0), "mode": "fly"}, "soft limits"),  # the run-up leaves the travel
        ({"max_time_s": 1.0}, "would take"),
        ({"roi": (10, 5, 0, 64)}, "roi"),
        ({"geometry": {"energy_eV": 12000.0}}, "SxdmGeometry"),
    ],
)
def test_raster_refuses_bad_arguments_before_any_message(nanoprobe, overrides, match):
    plan = raster(nanoprobe, **overrides)
    with pytest.raises(PlanArgumentError, match=match):
        next(plan)


@pytest.mark.parametrize("plan_factory, read_by_analysis", [
    (lambda d, md: raster(d, md=md), "sxdm_geometry"),
    (lambda d, md: find_bragg_peak(d["merlin"], d["np_theta"], [6.0, 6.1, 6.2, 6.3], md=md), "image_key"),
    (lambda d, md: xrf_map(d["np_xrf"], d["np_stage"], (-1, 1), (-1, 1), 0.5, md=md), "xrf_raster"),
])
def test_md_may_add_keys_but_not_replace_what_the_analysis_reads(nanoprobe, plan_factory, read_by_analysis):
    for key in ("technique", read_by_analysis):
        with pytest.raises(StartDocumentError, match=f"md may not replace.*{key}"):
            next(plan_factory(nanoprobe, {key: "x"}))
    assert next(plan_factory(nanoprobe, {"operator": "me"})) is not None  # other keys are the user's


def test_raster_needs_a_geometry_from_the_detector_or_the_caller(nanoprobe):
    class PlainDetector:
        name = "cam"

    plan = sxdm_rocking_raster(PlainDetector(), nanoprobe["np_stage"], nanoprobe["np_theta"], (-0.2, 0.2),
                               (-0.2, 0.2), STEP, [6.0])
    with pytest.raises(PlanArgumentError, match="geometry"):
        next(plan)


@pytest.mark.parametrize("plan_factory, match", [
    (lambda d: find_bragg_peak(d["merlin"], d["np_theta"], [6.0, 6.1, 6.2]), ">= 4 angles"),
    (lambda d: find_bragg_peak(d["merlin"], d["np_theta"], [6.0, 6.1, 6.2, 70.0]), "theta"),
    (lambda d: xrf_map(d["np_xrf"], d["np_stage"], (-1, 1), (-1, 1), 0.3), "multiple of the step"),
    (lambda d: xrf_map(d["np_xrf"], d["np_stage"], (-1, 1), (-1, 1), 0.5, threshold=1.5), "threshold"),
    (lambda d: xrf_map(d["np_xrf"], d["np_stage"], (-1, 1), (-1, 1), 0.01, max_time_s=10.0), "would take"),
])
def test_search_plans_refuse_bad_arguments_before_any_message(nanoprobe, plan_factory, match):
    with pytest.raises(PlanArgumentError, match=match):
        next(plan_factory(nanoprobe))


def test_time_estimate_counts_frames_rows_and_angles():
    assert estimate_duration_s(2, 3, 4, 0.01, 0.002, "step") == pytest.approx(
        2 * (ANGLE_OVERHEAD_S + 3 * 4 * (0.012 + STEP_OVERHEAD_S))
    )
    assert estimate_duration_s(2, 3, 4, 0.01, 0.002, "fly") == pytest.approx(
        2 * (ANGLE_OVERHEAD_S + 3 * (4 * 0.012 + LINE_OVERHEAD_S))
    )


# --- limits the devices hold, checked before anything moves --------------------------------


def test_device_soft_limits_stop_the_raster_before_it_moves_or_records(RE, nanoprobe):
    x = nanoprobe["np_stage"].x
    RE(bps.mv(x.high_limit_travel, 0.1))
    with pytest.raises(PlanArgumentError, match="soft limits"):
        collect(RE, raster(nanoprobe))
    assert call_in_bluesky_event_loop(x.user_readback.get_value()) == 0.0
    assert x.trajectory.number == 0  # never moved


def test_fly_speed_above_the_axis_maximum_is_refused_before_moving(RE, nanoprobe):
    x = nanoprobe["np_stage"].x
    RE(bps.mv(x.max_velocity, 5.0))  # fly speed: 0.1 um / 0.01 s = 10 um/s
    with pytest.raises(PlanArgumentError, match="maximum speed"):
        collect(RE, raster(nanoprobe, mode="fly"))
    assert x.trajectory.number == 0


# --- documents ----------------------------------------------------------------------------------


def test_step_raster_records_frames_positions_and_analysis_metadata(RE, nanoprobe, capsys, caplog):
    caplog.set_level("INFO", logger="bluesky.nanostrain")
    uid, docs = collect(RE, raster(nanoprobe, progress=True, background=0.1, roi=(8, 56, 8, 56)))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sxdm:")]
    assert [record.getMessage() for record in caplog.records if record.name == "bluesky.nanostrain"] == lines
    (start,) = of(docs, "start")
    assert start["uid"] == uid and start["technique"] == "sxdm" and start["image_key"] == "merlin"
    geometry = nanoprobe["merlin"].sxdm_geometry()
    assert start["sxdm_geometry"]["energy_eV"] == geometry.energy_eV == 12000.0
    assert start["sxdm_geometry"] == {**asdict(geometry), "center_px": list(geometry.center_px)}
    assert SxdmGeometry.from_metadata(start["sxdm_geometry"]) == geometry  # what the analysis rebuilds
    assert start["sxdm_thetas_deg"] == [6.0, 6.1]
    assert start["sxdm_raster"] == {"shape": [5, 5], "step_um": STEP, "x_um": [-0.2, 0.2], "y_um": [-0.2, 0.2],
                                    "order": ["theta", "y", "x"], "mode": "step"}
    assert start["sxdm_background"] == 0.1 and start["sxdm_roi"] == [8, 56, 8, 56]
    events = of(docs, "event")
    assert len(events) == len(of(docs, "stream_datum")) == 50
    theta = np.array([e["data"]["np_theta"] for e in events]).reshape(2, 5, 5)
    y = np.array([e["data"]["np_stage-y"] for e in events]).reshape(2, 5, 5)
    x = np.array([e["data"]["np_stage-x"] for e in events]).reshape(2, 5, 5)
    np.testing.assert_allclose(theta[:, 0, 0], [6.0, 6.1])
    np.testing.assert_allclose(y[0, :, 0], np.linspace(-0.2, 0.2, 5), atol=1e-12)
    np.testing.assert_allclose(x[1, 3], np.linspace(-0.2, 0.2, 5), atol=1e-12)
    assert len(lines) == 2 and lines[-1].startswith("sxdm: angle 2/2")


def test_fly_raster_streams_one_datum_per_row_and_restores_the_speed(RE, nanoprobe):
    x = nanoprobe["np_stage"].x
    speed = call_in_bluesky_event_loop(x.velocity.get_value())
    _, docs = collect(RE, raster(nanoprobe, mode="fly", monitor=nanoprobe["np_i0"]))
    streams = {d["uid"]: d["name"] for d in of(docs, "descriptor")}
    datums = of(docs, "stream_datum")
    assert {streams[d["descriptor"]] for d in datums} == {"primary"}
    assert [d["seq_nums"] for d in datums] == [{"start": 1 + 5 * i, "stop": 6 + 5 * i} for i in range(10)]
    assert all(streams[e["descriptor"]] == "lines" for e in of(docs, "event"))
    assert len(of(docs, "event")) == 10
    assert x.trajectory.speed == pytest.approx(STEP / 0.01)  # the last row flew at step / period
    assert call_in_bluesky_event_loop(x.velocity.get_value()) == speed


# --- known answers ------------------------------------------------------------------------------


def test_find_bragg_peak_moves_the_rotation_to_the_rotated_crystals_peak(RE, nanoprobe):
    theta_peak = float(bragg_angle(D_A, 12000.0)) - THETA_XZ  # a rotation theta_xz shifts the rocking angle
    fit, docs = collect(RE, find_bragg_peak(nanoprobe["merlin"], nanoprobe["np_theta"],
                                            theta_peak + np.linspace(-0.6, 0.6, 13), exposure_s=0.01))
    assert of(docs, "start")[0]["technique"] == "sxdm_rocking_curve"
    assert fit.centre_deg == pytest.approx(theta_peak, abs=0.01)
    assert call_in_bluesky_event_loop(nanoprobe["np_theta"].user_readback.get_value()) == pytest.approx(fit.centre_deg)


def test_xrf_map_finds_the_particle_and_goes_there(RE, nanoprobe):
    particle = CathodeParticle("NC91", "SC", radius_um=0.8)
    nanoprobe["merlin"].simulation.mount(project_particle(particle, 0.1, centre_um=(0.6, -0.4)))
    nanoprobe["merlin"].simulation.drift = lambda theta_deg: (0.0, 0.0)
    result, docs = collect(RE, xrf_map(nanoprobe["np_xrf"], nanoprobe["np_stage"], (-2.0, 2.0), (-2.0, 2.0), 0.2,
                                       move_to_particle=True))
    assert of(docs, "start")[0]["technique"] == "xrf_map"
    assert result.counts.shape == (21, 21)
    assert result.centroid_um == pytest.approx((0.6, -0.4), abs=0.05)
    stage = nanoprobe["np_stage"]
    assert call_in_bluesky_event_loop(stage.y.user_readback.get_value()) == pytest.approx(result.centroid_um[0])
    assert call_in_bluesky_event_loop(stage.x.user_readback.get_value()) == pytest.approx(result.centroid_um[1])
