"""Known-answer tests of the SXDM 5D strain analysis (nanostrain.analysis.sxdm).

Synthetic datasets are rendered from a known d / tilt field (core-shell strain gradient and
two tilted regions) with Poisson noise, then analysed; the analysis must return the field.
"""

from __future__ import annotations

import json
import pickle
import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

from nanostrain.analysis.sxdm import SxdmAccumulator, refine_gaussian, signal_mask, strain_maps
from nanostrain.analysis.sxdm_alignment import fit_rocking_curve, xrf_centroid
from nanostrain.analysis.units import FWHM_PER_SIGMA
from nanostrain.analysis.sxdm_geometry import (
    SxdmGeometry,
    bragg_angle,
    bragg_angle_003,
    bragg_peak_position,
    d_tilts_from_q,
    lab_q,
    q_from_d_tilts,
    q_vectors,
    sample_rotation,
)
from nanostrain.analysis.sxdm_register import cross_correlation_shift, register_maps
from nanostrain.analysis.units import d_to_q
from nanostrain.analysis.weighted_sums import weighted_frame_sums
from nanostrain.sim.sxdm_render import render_frames

ENERGY_EV = 12000.0
C_A = 14.2
D003_A = C_A / 3.0
FRAME = (64, 64)
PEAK_SIGMA = 0.003  # 1/A: ~4.5 detector pixels, ~0.13 deg of rocking
BACKGROUND = 0.1
STRAIN_TOL = 5e-5
TILT_TOL_DEG = 0.005


@pytest.fixture(scope="module")
def geometry() -> SxdmGeometry:
    return SxdmGeometry(ENERGY_EV, 0.5, 55e-6, (31.5, 31.5), 2.0 * float(bragg_angle_003(C_A, ENERGY_EV)))


@pytest.fixture(scope="module")
def thetas(geometry) -> np.ndarray:
    return geometry.two_theta_deg / 2.0 + np.linspace(-0.5, 0.5, 21)


def particle(n: int) -> dict[str, np.ndarray]:
    """Disc of radius ~6 pixels: strain rising to 1e-3 at the surface (core-shell), a region
    tilted by +0.03 deg in Qx-Qy and one by -0.04 deg in Qx-Qz."""
    y, x = np.mgrid[:n, :n] - (n - 1) / 2.0
    r = np.hypot(y, x)
    strain = 1e-3 * (r / 6.0) ** 2
    truth = {
        "amplitude": 500.0 * np.clip(6.5 - r, 0.0, 1.0),
        "d": D003_A * (1.0 + strain),
        "theta_xy": np.where((x > 1) & (y < -1), 0.03, 0.0),
        "theta_xz": np.where((x < -1) & (y > 1), -0.04, 0.0),
    }
    truth["q"] = q_from_d_tilts(truth["d"], truth["theta_xy"], truth["theta_xz"])
    return truth


def assert_recovers(maps, truth, strain_tol=STRAIN_TOL, tilt_tol=TILT_TOL_DEG) -> None:
    """maps equal the truth over the particle mask (references: medians over that mask)."""
    inside = maps.mask
    d_ref = np.median(truth["d"][inside])
    np.testing.assert_array_less(np.abs(maps.dd_over_d - (truth["d"] - d_ref) / d_ref)[inside], strain_tol)
    for name in ("theta_xy", "theta_xz"):
        expected = truth[name] - np.median(truth[name][inside])
        np.testing.assert_array_less(np.abs(getattr(maps, name) - expected)[inside], tilt_tol)


@pytest.fixture(scope="module")
def truth16() -> dict[str, np.ndarray]:
    return particle(16)


@pytest.fixture(scope="module")
def frames16(geometry, thetas, truth16) -> np.ndarray:
    return render_frames(
        geometry,
        thetas,
        truth16["q"],
        truth16["amplitude"],
        PEAK_SIGMA,
        FRAME,
        BACKGROUND,
        rng=np.random.default_rng(1),
        dtype=np.uint16,
    )


@pytest.fixture(scope="module")
def maps16(frames16, thetas, geometry):
    return strain_maps(frames16, thetas, geometry, background=BACKGROUND)


# --- geometry -----------------------------------------------------------------------------


def test_wavelength_and_wavevector():
    g = SxdmGeometry(12398.419843320026, 1.0, 1e-4, (0, 0), 10.0)
    assert g.wavelength_A == pytest.approx(1.0, rel=1e-15)
    assert g.k_invA == pytest.approx(2 * np.pi, rel=1e-15)
    assert g.pixel_rad == pytest.approx(1e-4)


@pytest.mark.parametrize("field,value", [("energy_eV", 0.0), ("distance_m", -1.0), ("two_theta_deg", 190.0)])
def test_geometry_rejects_bad_values(field, value):
    kwargs = dict(energy_eV=10000.0, distance_m=1.0, pixel_m=1e-4, center_px=(0, 0), two_theta_deg=10.0)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        SxdmGeometry(**kwargs)


def test_geometry_record_round_trips_through_json():
    geometry = SxdmGeometry(8333.0, 0.42, 75e-6, (101.25, 40.5), 21.7, gamma_deg=-1.25)
    record = geometry.to_metadata()
    assert record == {"energy_eV": 8333.0, "distance_m": 0.42, "pixel_m": 75e-6, "center_px": [101.25, 40.5],
                      "two_theta_deg": 21.7, "gamma_deg": -1.25}
    assert SxdmGeometry.from_metadata(json.loads(json.dumps(record))) == geometry
    without_gamma = {key: value for key, value in record.items() if key != "gamma_deg"}
    assert SxdmGeometry.from_metadata(without_gamma).gamma_deg == 0.0  # the field's default


@pytest.mark.parametrize("change, match", [
    ({"energy_keV": 12.0}, r"missing \['energy_eV'\], unknown \['energy_keV'\]"),  # a record in keV
    ({}, r"missing \['distance_m'\]"),
])
def test_geometry_record_with_missing_or_unknown_keys_is_refused(change, match):
    record = {"energy_eV": 12000.0, "pixel_m": 55e-6, "center_px": [1, 2], "two_theta_deg": 12.0, **change}
    if "energy_keV" in change:
        record.pop("energy_eV")
        record["distance_m"] = 0.5
    with pytest.raises(ValueError, match=match):
        SxdmGeometry.from_metadata(record)


def test_d_to_q_and_bragg_angle_003():
    assert d_to_q(2 * np.pi) == pytest.approx(1.0)
    wavelength = 12398.419843320026 / 12000.0
    assert bragg_angle_003(14.2, 12000.0) == pytest.approx(
        np.degrees(np.arcsin(wavelength / (2 * 14.2 / 3))), rel=1e-14
    )
    assert bragg_angle(wavelength / 2, 12000.0) == pytest.approx(90.0)
    with pytest.raises(ValueError, match="no Bragg"):
        bragg_angle(0.1, 12000.0)


def test_q_is_along_minus_z_with_bragg_magnitude_at_nominal_condition():
    g = SxdmGeometry(10000.0, 0.8, 75e-6, (20, 30), 18.0)
    q = q_vectors(g, 9.0, (40, 60))[:, 20, 30]
    q_bragg = 2 * g.k_invA * np.sin(np.radians(9.0))
    np.testing.assert_allclose(q, [0.0, 0.0, -q_bragg], atol=1e-13)


def test_q_magnitude_depends_only_on_the_pixel_two_theta(geometry):
    two_theta = np.radians(geometry.two_theta_deg) + (np.arange(64) - 31.5) * geometry.pixel_rad
    for theta in (5.0, 6.3, 7.0):
        q = q_vectors(geometry, theta, FRAME)
        magnitude = np.sqrt(np.sum(q**2, axis=0))
        np.testing.assert_allclose(
            magnitude, np.broadcast_to(2 * geometry.k_invA * np.sin(two_theta / 2), FRAME), rtol=1e-13
        )


def test_q_vectors_is_vectorised_over_angles(geometry, thetas):
    stacked = q_vectors(geometry, thetas[:3], FRAME)
    assert stacked.shape == (3, 3) + FRAME
    np.testing.assert_allclose(stacked[1], q_vectors(geometry, thetas[1], FRAME), rtol=1e-15)


def test_q_from_d_tilts_inverts_d_tilts_from_q():
    d, txy, txz = (
        D003_A * np.array([0.99, 1.0, 1.002]),
        np.array([-0.2, 0.0, 0.05]),
        np.array([0.3, 0.0, -0.1]),
    )
    q = q_from_d_tilts(d, txy, txz)
    np.testing.assert_allclose(q[:, 1], [0, 0, -2 * np.pi / D003_A], atol=1e-15)
    for got, expected in zip(d_tilts_from_q(q), (d, txy, txz)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_bragg_peak_position_of_the_nominal_q_is_the_detector_centre(geometry):
    theta, row, col = bragg_peak_position(geometry, q_from_d_tilts(D003_A, 0.0, 0.0))
    assert theta == pytest.approx(geometry.two_theta_deg / 2, abs=1e-12)
    assert (row, col) == (pytest.approx(31.5, abs=1e-9), pytest.approx(31.5, abs=1e-9))


def test_bragg_peak_position_round_trips_through_the_forward_convention(geometry):
    rng = np.random.default_rng(0)
    q = q_from_d_tilts(D003_A * (1 + rng.normal(0, 2e-3, 50)), rng.normal(0, 0.2, 50), rng.normal(0, 0.5, 50))
    theta, row, col = bragg_peak_position(geometry, q)
    forward = np.einsum("nij,jn->in", sample_rotation(theta), lab_q(geometry, row, col))
    np.testing.assert_allclose(forward, q, atol=1e-12)


def test_sign_conventions_of_tilts_and_strain(geometry):
    theta_b = geometry.two_theta_deg / 2
    theta, row, col = bragg_peak_position(geometry, q_from_d_tilts(D003_A, 0.0, 0.1))
    assert theta == pytest.approx(theta_b - 0.1, abs=1e-9)  # theta_xz: rocking angle only
    assert (row, col) == (pytest.approx(31.5, abs=1e-9), pytest.approx(31.5, abs=1e-9))
    theta, row, col = bragg_peak_position(geometry, q_from_d_tilts(D003_A, 0.1, 0.0))
    # theta_xy: up the detector (gamma = |Q|/K * 0.1 deg = 3.5 pixels), hardly any rocking
    assert row == pytest.approx(
        31.5 - np.radians(0.1) * d_to_q(D003_A) / geometry.k_invA / geometry.pixel_rad, abs=0.01
    )
    assert abs(theta - theta_b) < 1e-3 and abs(col - 31.5) < 0.1
    theta, row, col = bragg_peak_position(geometry, q_from_d_tilts(D003_A * 1.001, 0.0, 0.0))
    assert (
        col < 31.5 - 1 and theta < theta_b and row == pytest.approx(31.5, abs=1e-9)
    )  # larger d: lower 2theta


def test_a_pure_rocking_tilt_moves_theta_xz_not_theta_xy(geometry, thetas):
    q = q_from_d_tilts(np.full((3, 3), D003_A), 0.0, 0.08)
    frames = render_frames(geometry, thetas, q, np.full((3, 3), 200.0), PEAK_SIGMA, FRAME)
    maps = strain_maps(frames, thetas, geometry, registration=False)
    assert maps.theta_xz_ref == pytest.approx(0.08, abs=1e-3)
    assert maps.theta_xy_ref == pytest.approx(0.0, abs=1e-6)
    # Voxel sums, not q-space integrals: voxels have volume ~ cos(gamma) sin(2theta), so the
    # centre of mass of |Q| is low by sigma^2 cot(2theta) / (K cos(theta)) ~ 5e-6 relative here.
    bias = (
        PEAK_SIGMA**2
        / np.tan(np.radians(geometry.two_theta_deg))
        / (geometry.k_invA * np.cos(np.radians(geometry.two_theta_deg / 2)))
    )
    assert maps.d_ref == pytest.approx(D003_A * (1 + bias / d_to_q(D003_A)), rel=1e-6)


def test_detector_beyond_gamma_equal_two_theta_is_rejected():
    g = SxdmGeometry(10000.0, 0.1, 1e-3, (50, 50), 1.0)
    with pytest.raises(ValueError, match="gamma"):
        q_vectors(g, 0.5, (100, 100))


# --- the Q convention against xrayutilities ---------------------------------------------------
# Our lab frame in xrayutilities: beam along +z, the sample rocks about +y at th - 90 deg, the
# detector arm turns by alpha about +y then by gamma about -x, so the arm (alpha, gamma) points
# where our pixel (2theta, gamma) does (cos 2theta = cos gamma cos alpha). A flat detector on
# that arm has its rows along -y and its columns along +x.

XU_DETECTOR = (256, 256)


def xu_conversion(energy_eV: float, sample_sense: str = "y+"):
    xu = pytest.importorskip("xrayutilities")
    return xu.experiment.QConversion([sample_sense], ["y+", "x-"], [0, 0, 1], en=energy_eV)


def pixel_angles(geometry: SxdmGeometry, shape):
    """(2theta, gamma) in radians of every pixel, the module convention (linear in the index)."""
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    two_theta = np.radians(geometry.two_theta_deg) + (cols - geometry.center_px[1]) * geometry.pixel_rad
    gamma = np.radians(geometry.gamma_deg) + (geometry.center_px[0] - rows) * geometry.pixel_rad
    return two_theta, gamma


def xu_point_q(geometry: SxdmGeometry, theta_deg: float, shape, sample_sense: str = "y+") -> np.ndarray:
    """q' (3, rows, cols) from xrayutilities' QConversion.point, pixel by pixel at arm (alpha, gamma)."""
    two_theta, gamma = pixel_angles(geometry, shape)
    alpha = np.degrees(np.arccos(np.cos(two_theta) / np.cos(gamma))).ravel()
    q = xu_conversion(geometry.energy_eV, sample_sense).point(
        np.full(alpha.size, theta_deg - 90.0), alpha, np.degrees(gamma).ravel()
    )
    return np.stack(q).reshape(3, *shape)


def xu_flat_detector_q(geometry: SxdmGeometry, thetas_deg: np.ndarray, shape) -> np.ndarray:
    """q' (n_theta, 3, rows, cols) of a flat detector normal to the arm at the centre pixel
    (xrayutilities' QConversion.area)."""
    qconv = xu_conversion(geometry.energy_eV)
    qconv.init_area("y-", "x+", cch1=geometry.center_px[0], cch2=geometry.center_px[1], Nch1=shape[0],
                    Nch2=shape[1], distance=geometry.distance_m, pwidth1=geometry.pixel_m, pwidth2=geometry.pixel_m)
    alpha0 = np.degrees(np.arccos(np.cos(np.radians(geometry.two_theta_deg)) / np.cos(np.radians(geometry.gamma_deg))))
    n = thetas_deg.size
    return np.stack(qconv.area(thetas_deg - 90.0, np.full(n, alpha0), np.full(n, geometry.gamma_deg)), axis=1)


def xu_geometry(gamma_deg: float) -> SxdmGeometry:
    """The module docstring's example: 256 x 256, 55 um pixels at 0.5 m, (003) at 12 keV;
    an integer centre pixel so that one pixel sits exactly at (2theta_0, gamma_0)."""
    two_theta = 2.0 * float(bragg_angle_003(C_A, ENERGY_EV))
    return SxdmGeometry(ENERGY_EV, 0.5, 55e-6, (128.0, 128.0), two_theta, gamma_deg)


@pytest.mark.parametrize("gamma_deg", [0.0, 1.5, -3.0])
def test_q_vectors_equal_xrayutilities_pixel_by_pixel_over_the_whole_detector(gamma_deg):
    geometry = xu_geometry(gamma_deg)
    thetas = geometry.two_theta_deg / 2 + np.array([-1.0, 0.0, 0.7])
    ours = q_vectors(geometry, thetas, XU_DETECTOR)
    for t, theta in enumerate(thetas):
        np.testing.assert_allclose(ours[t], xu_point_q(geometry, theta, XU_DETECTOR), rtol=0, atol=1e-12)


def test_the_sample_rotation_sense_is_the_one_xrayutilities_sees():
    """The same angle about -y (the opposite sense) is our convention at 180 deg - th, far
    from ours at th: the pixel-by-pixel agreement above pins the sense."""
    geometry = xu_geometry(1.5)
    theta = geometry.two_theta_deg / 2 + 0.5
    reversed_sense = xu_point_q(geometry, theta, XU_DETECTOR, sample_sense="y-")
    np.testing.assert_allclose(reversed_sense, q_vectors(geometry, 180.0 - theta, XU_DETECTOR), atol=1e-12)
    distance = np.linalg.norm(q_vectors(geometry, theta, XU_DETECTOR) - reversed_sense, axis=0)
    assert distance.min() > 0.1  # 1/A: every pixel's q' moves by ~|q| sin(180 deg - 2 th)


@pytest.mark.parametrize("gamma_deg, corner_invA", [(0.0, 2.9e-3), (1.5, 1.45e-2), (-3.0, 2.8e-2)])
def test_linear_angles_depart_from_a_flat_detector_as_the_module_docstring_states(gamma_deg, corner_invA):
    geometry = xu_geometry(gamma_deg)
    thetas = geometry.two_theta_deg / 2 + np.array([-1.0, 0.0, 0.7])
    ours, flat = q_vectors(geometry, thetas, XU_DETECTOR), xu_flat_detector_q(geometry, thetas, XU_DETECTOR)
    difference = np.linalg.norm(ours - flat, axis=1)
    assert difference[:, 128, 128].max() < 1e-8  # the centre pixel: the same point
    # the docstring's bound, every pixel at every angle:
    # K |u (sin 2theta_0 / sin alpha_0 - 1) - v sin gamma_0 cot alpha_0| + K (u^2 + v^2) / (2 tan alpha_0)
    two_theta, gamma = pixel_angles(geometry, XU_DETECTOR)
    tt0, g0 = np.radians(geometry.two_theta_deg), np.radians(geometry.gamma_deg)
    u, v = two_theta - tt0, gamma - g0
    alpha0 = np.arccos(np.cos(tt0) / np.cos(g0))
    k = geometry.k_invA
    bound = k * np.abs(u * (np.sin(tt0) / np.sin(alpha0) - 1) - v * np.sin(g0) / np.tan(alpha0)) + k * (
        u * u + v * v
    ) / (2 * np.tan(alpha0))
    np.testing.assert_array_less(difference, np.broadcast_to(1.05 * bound + 1e-12, difference.shape))
    # and the docstring's numbers: largest at a corner
    corners = difference[:, [0, 0, -1, -1], [0, -1, 0, -1]].max()
    assert corners == difference.max() == pytest.approx(corner_invA, rel=0.02)


# --- rendering ----------------------------------------------------------------------------


def test_rendered_peak_lands_where_bragg_peak_position_says(geometry, thetas):
    theta, row, col = bragg_peak_position(geometry, q_from_d_tilts(D003_A, 0.0, 0.0))
    q = q_from_d_tilts(D003_A, 0.0, 0.0)[:, None, None]
    frames = render_frames(geometry, thetas, q, np.array([[100.0]]), PEAK_SIGMA, FRAME, background=2.0)
    t, r, c = np.unravel_index(np.argmax(frames[:, 0, 0]), (thetas.size,) + FRAME)
    assert thetas[t] == pytest.approx(theta, abs=0.03)
    assert abs(r - row) <= 0.5 + 1e-6 and abs(c - col) <= 0.5 + 1e-6
    assert frames[t, 0, 0].max() == pytest.approx(102.0, rel=0.02)
    assert frames.min() == pytest.approx(2.0)


def test_render_drift_shifts_the_maps_of_that_angle(geometry, truth16):
    theta_b = geometry.two_theta_deg / 2
    drift = np.array([[0.0, 0.0], [2.0, -1.0]])
    frames = render_frames(
        geometry, [theta_b, theta_b], truth16["q"], truth16["amplitude"], PEAK_SIGMA, FRAME, drift_px=drift
    )
    maps = frames.sum(axis=(3, 4))
    assert maps[0].sum() > 0
    np.testing.assert_allclose(maps[1][2:, :-1], maps[0][:-2, 1:], rtol=1e-5)  # seen at p + (2, -1)


# --- analysis -----------------------------------------------------------------------------


def test_strain_maps_recover_a_known_strain_and_tilt_field(maps16, truth16):
    assert maps16.mask.sum() >= 0.9 * (truth16["amplitude"] > 0).sum()
    assert not (maps16.mask & (truth16["amplitude"] == 0)).any()
    assert_recovers(maps16, truth16)


def test_sigma_is_the_spread_over_the_particle(maps16, truth16):
    inside = maps16.mask
    d_ref = np.median(truth16["d"][inside])
    assert maps16.sigma.dd_over_d == pytest.approx(np.std((truth16["d"][inside] - d_ref) / d_ref), rel=0.05)
    assert maps16.sigma.theta_xz == pytest.approx(np.std(truth16["theta_xz"][inside]), rel=0.05)
    assert maps16.d == pytest.approx(2 * np.pi / np.sqrt(np.sum(maps16.q**2, axis=0)), nan_ok=True)


def test_given_d_ref_sets_the_strain_zero(frames16, thetas, geometry, truth16):
    maps = strain_maps(frames16, thetas, geometry, d_ref=D003_A, background=BACKGROUND, registration=False)
    np.testing.assert_array_less(np.abs(maps.dd_over_d - (truth16["d"] / D003_A - 1))[maps.mask], STRAIN_TOL)


def test_frames_in_shuffled_order_give_the_same_maps(frames16, thetas, geometry, maps16):
    n_theta, ny, nx = frames16.shape[:3]
    order = np.random.default_rng(2).permutation(n_theta * ny * nx)
    t, iy, ix = np.unravel_index(order, (n_theta, ny, nx))
    acc = SxdmAccumulator(geometry, thetas, (ny, nx), FRAME, BACKGROUND)
    for start in range(0, order.size, 300):
        part = slice(start, start + 300)
        acc.add_many(t[part], iy[part], ix[part], frames16[t[part], iy[part], ix[part]])
    shuffled = acc.result()
    np.testing.assert_allclose(shuffled.q, maps16.q, rtol=1e-10)
    np.testing.assert_allclose(shuffled.shifts_px, maps16.shifts_px)


def test_iterable_input_equals_5d_input(frames16, thetas, geometry, maps16):
    items = ((t, iy, ix, frames16[t, iy, ix]) for t, iy, ix in np.ndindex(frames16.shape[:3]))
    maps = strain_maps(
        items, thetas, geometry, background=BACKGROUND, raster_shape=frames16.shape[1:3], batch_frames=1000
    )
    np.testing.assert_allclose(maps.q, maps16.q, rtol=1e-10)
    np.testing.assert_allclose(maps.dd_over_d, maps16.dd_over_d, rtol=1e-6, atol=1e-12)


def test_iterable_of_mixed_dtypes_in_small_batches_equals_5d_input(frames16, thetas, geometry, maps16):
    items = (
        (t, iy, ix, frames16[t, iy, ix].astype(np.float32 if (iy + ix) % 3 == 0 else np.uint16))
        for t, iy, ix in np.ndindex(frames16.shape[:3])
    )
    maps = strain_maps(
        items, thetas, geometry, background=BACKGROUND, raster_shape=frames16.shape[1:3], batch_frames=37
    )
    np.testing.assert_allclose(maps.q, maps16.q, rtol=1e-10)


def test_single_frame_add_equals_batch_add(frames16, thetas, geometry):
    single = SxdmAccumulator(geometry, thetas, (16, 16), FRAME, n_threads=1)
    batch = SxdmAccumulator(geometry, thetas, (16, 16), FRAME, n_threads=2)
    for iy in range(16):
        for ix in range(16):
            single.add(10, iy, ix, frames16[10, iy, ix])
    batch.add_many(
        10, np.repeat(np.arange(16), 16), np.tile(np.arange(16), 16), frames16[10].reshape(-1, *FRAME)
    )
    np.testing.assert_allclose(single.intensity_by_angle, batch.intensity_by_angle, rtol=1e-12)
    assert single.n_frames == batch.n_frames == 256


def test_per_angle_intensity_sums_to_the_unregistered_intensity(frames16, thetas, geometry):
    acc = SxdmAccumulator(geometry, thetas, (16, 16), FRAME, BACKGROUND)
    for t in range(thetas.size):
        acc.add_many(
            t, np.repeat(np.arange(16), 16), np.tile(np.arange(16), 16), frames16[t].reshape(-1, *FRAME)
        )
    expected = frames16.sum(axis=(0, 3, 4), dtype=np.float64) - BACKGROUND * thetas.size * np.prod(FRAME)
    np.testing.assert_allclose(acc.intensity_by_angle.sum(axis=0), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(acc.result(registration=False).intensity, expected, rtol=1e-6, atol=1e-6)


def test_detector_mask_removes_a_hot_pixel(frames16, thetas, geometry, maps16):
    hot = frames16.copy()
    hot[..., 5, 60] = 60000
    mask = np.zeros(FRAME, dtype=bool)
    mask[5, 60] = True
    unmasked = strain_maps(hot, thetas, geometry, background=BACKGROUND, registration=False)
    masked = strain_maps(hot, thetas, geometry, background=BACKGROUND, mask=mask, registration=False)
    inside = maps16.mask
    assert np.abs(unmasked.dd_over_d - maps16.dd_over_d)[inside].max() > 10 * STRAIN_TOL
    np.testing.assert_allclose(masked.dd_over_d[inside], maps16.dd_over_d[inside], atol=2e-6)


def test_roi_and_background_frame(frames16, thetas, geometry, truth16):
    background = np.full(FRAME, BACKGROUND)
    maps = strain_maps(frames16, thetas, geometry, background=background, roi=(8, 56, 8, 56))
    assert_recovers(maps, truth16)


def test_maps_are_nan_off_the_particle_and_finite_on_it(maps16, truth16):
    footprint = truth16["amplitude"] > 0
    for name in ("dd_over_d", "theta_xy", "theta_xz", "d"):
        values = getattr(maps16, name)
        assert np.isnan(values[~footprint]).all(), name
        assert np.isfinite(values[footprint]).mean() >= 0.95, name
    assert np.isnan(maps16.q[:, ~footprint]).all()
    np.testing.assert_array_equal(maps16.signal, np.isfinite(maps16.dd_over_d))
    assert (maps16.signal | ~maps16.mask).all()  # the statistics' mask lies within the signal
    assert np.isfinite(maps16.intensity).all()  # the map the signal is drawn from covers the raster


def test_signal_threshold_is_five_noise_sigmas_with_a_floor_at_two_percent_of_the_particle():
    rng = np.random.default_rng(3)
    intensity = rng.normal(0.0, 10.0, (40, 40))  # background-subtracted noise off the particle
    intensity[10:30, 10:30] += 1000.0
    signal, threshold = signal_mask(intensity)
    assert threshold == pytest.approx(50.0, rel=0.15)  # 5 sigma; sigma from the negative half
    np.testing.assert_array_equal(signal[10:30, 10:30], True)
    assert signal.sum() == 400
    # without negative pixels (background not subtracted) the floor: 2 % of the particle's median
    offset = intensity + 100.0
    signal, threshold = signal_mask(offset)
    assert threshold == pytest.approx(0.02 * np.median(offset[10:30, 10:30]))
    assert signal.sum() == offset.size  # an unsubtracted background is indistinguishable: all kept


def test_signal_of_an_empty_or_uniform_map():
    signal, threshold = signal_mask(np.zeros((4, 4)))
    assert not signal.any() and threshold == np.inf
    signal, threshold = signal_mask(np.full((4, 4), 7.0))
    assert signal.all() and threshold == pytest.approx(0.14)


def test_bad_input_is_rejected_before_accumulating(geometry, thetas):
    acc = SxdmAccumulator(geometry, thetas, (4, 4), FRAME)
    with pytest.raises(ValueError, match="frames must be"):
        acc.add_many(0, 0, 0, np.zeros((1, 32, 32)))
    with pytest.raises(ValueError, match="theta_index"):
        acc.add(thetas.size, 0, 0, np.zeros(FRAME))
    with pytest.raises(ValueError, match="iy"):
        acc.add(0, 4, 0, np.zeros(FRAME))
    assert acc.n_frames == 0 and not acc.intensity_by_angle.any()
    with pytest.raises(ValueError, match="roi"):
        SxdmAccumulator(geometry, thetas, (4, 4), FRAME, roi=(0, 70, 0, 64))
    with pytest.raises(ValueError, match="raster_shape"):
        strain_maps(iter([]), thetas, geometry)


def test_accumulator_memory_does_not_grow_with_the_number_of_frames(geometry, thetas):
    frames = np.random.default_rng(3).poisson(1.0, (256,) + FRAME).astype(np.uint16)
    iy, ix = np.repeat(np.arange(16), 16), np.tile(np.arange(16), 16)
    acc = SxdmAccumulator(geometry, thetas, (16, 16), FRAME)
    state = acc.nbytes
    acc.add_many(0, iy, ix, frames)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for t in range(1, thetas.size):
            acc.add_many(t, iy, ix, frames)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert acc.n_frames == 256 * thetas.size
    assert grown < 64 * 1024  # 5120 more frames (40 MB of pixels) added ~nothing
    assert acc.nbytes == state == thetas.size * 16 * 16 * 4 * 8


def test_known_shifts_need_no_per_angle_memory_and_match_result_time_shifts(
    frames16, thetas, geometry, maps16
):
    shifts = np.random.default_rng(4).uniform(-1, 1, (thetas.size, 2))
    lean = SxdmAccumulator(geometry, thetas, (16, 16), FRAME, BACKGROUND, shifts_px=shifts)
    wide = SxdmAccumulator(
        geometry, np.tile(thetas, 3), (16, 16), FRAME, shifts_px=np.zeros((3 * thetas.size, 2))
    )
    assert lean.nbytes == wide.nbytes == 16 * 16 * 4 * 8
    full = SxdmAccumulator(geometry, thetas, (16, 16), FRAME, BACKGROUND)
    for t in range(thetas.size):
        for acc in (lean, full):
            acc.add_many(
                t, np.repeat(np.arange(16), 16), np.tile(np.arange(16), 16), frames16[t].reshape(-1, *FRAME)
            )
    np.testing.assert_allclose(lean.result().q, full.result(shifts_px=shifts).q, rtol=1e-10)
    with pytest.raises(ValueError, match="per-angle"):
        lean.intensity_by_angle


def _feed(acc: SxdmAccumulator, frames: np.ndarray, flat: np.ndarray) -> SxdmAccumulator:
    """acc fed the frames at flat raster indices ``flat`` of the (n_theta, ny, nx) raster."""
    t, iy, ix = np.unravel_index(flat, frames.shape[:3])
    acc.add_many(t, iy, ix, frames[t, iy, ix])
    return acc


@pytest.mark.parametrize("shifted", [False, True], ids=["per-angle sums", "known shifts"])
def test_merged_partial_states_over_a_split_of_the_frames_equal_one_accumulator(
    frames16, thetas, geometry, shifted
):
    n = int(np.prod(frames16.shape[:3]))
    order = np.random.default_rng(7).permutation(n)
    shifts = np.random.default_rng(8).uniform(-1, 1, (thetas.size, 2)) if shifted else None

    def fresh() -> SxdmAccumulator:
        return SxdmAccumulator(geometry, thetas, (16, 16), FRAME, BACKGROUND, shifts_px=shifts)

    whole = _feed(fresh(), frames16, np.arange(n))
    parts = [_feed(fresh(), frames16, order[a:b]) for a, b in ((0, 1000), (1000, 1001), (1001, n))]
    merged = pickle.loads(pickle.dumps(parts[2])) + (parts[0] + parts[1])  # partial states cross processes
    assert merged.n_frames == whole.n_frames == n
    np.testing.assert_allclose(merged._sums, whole._sums, rtol=1e-12, atol=1e-9)
    assert parts[0].n_frames == 1000  # the operands are left as they were
    mine, theirs = merged.result(), whole.result()
    np.testing.assert_allclose(mine.q, theirs.q, rtol=1e-12, atol=1e-15)  # |Q| ~ 0.9 1/A
    np.testing.assert_allclose(mine.dd_over_d, theirs.dd_over_d, rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(mine.shifts_px, theirs.shifts_px)


def test_merged_per_angle_sums_of_different_frames_are_exact(frames16, thetas, geometry):
    by_angle = [_feed(SxdmAccumulator(geometry, thetas, (16, 16), FRAME, BACKGROUND), frames16,
                      np.arange(t * 256, (t + 1) * 256)) for t in range(thetas.size)]
    whole = _feed(SxdmAccumulator(geometry, thetas, (16, 16), FRAME, BACKGROUND), frames16, np.arange(thetas.size * 256))
    merged = by_angle[0]
    for part in by_angle[1:]:
        merged = merged + part
    np.testing.assert_array_equal(merged.intensity_by_angle, whole.intensity_by_angle)


@pytest.mark.parametrize("change, match", [
    (dict(background=0.5), "background"), (dict(roi=(0, 32, 0, 64)), "roi"),
    (dict(shifts_px=np.zeros((21, 2))), "shifts_px"), (dict(raster_shape=(16, 8)), "raster_shape"),
])
def test_accumulators_that_reduce_frames_differently_are_not_merged(geometry, thetas, change, match):
    settings = dict(geometry=geometry, thetas_deg=thetas, raster_shape=(16, 16), frame_shape=FRAME, background=BACKGROUND)
    with pytest.raises(ValueError, match=match):
        SxdmAccumulator(**settings) + SxdmAccumulator(**{**settings, **change})


# --- streaming kernel ---------------------------------------------------------------------


def float64_sums(frames: np.ndarray, weights: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """The straightforward reference: crop, convert everything to float64, one matrix product."""
    h, w = weights.shape[1:]
    crop = np.asarray(frames, dtype=np.float64)[:, origin[0] : origin[0] + h, origin[1] : origin[1] + w]
    return crop.reshape(len(crop), -1) @ weights.reshape(4, -1).astype(np.float64).T


@pytest.mark.parametrize("n_frames", [1, 3, 4, 10])  # four frames per pass, then one by one
@pytest.mark.parametrize("origin, region", [((0, 0), FRAME), ((5, 11), (40, 29))])
def test_weighted_frame_sums_equal_a_float64_product(n_frames, origin, region):
    rng = np.random.default_rng(n_frames)
    frames = rng.integers(0, 65536, (n_frames,) + FRAME, dtype=np.uint16)
    frames[0] = 65535  # saturated everywhere: 65535 x 4096 counts, exact in float64
    frames[n_frames // 2 :, 3:9] = 0  # and, with 3 frames or more, an all-zero frame
    frames[n_frames // 2] *= n_frames < 3
    weights = rng.normal(0.0, 0.05, (4,) + region).astype(np.float32)
    weights[0] = rng.random(region) > 0.1  # intensity weights: 1, or 0 for masked pixels
    sums = weighted_frame_sums(frames, weights, origin)
    expected = float64_sums(frames, weights, origin)
    np.testing.assert_array_equal(sums[:, 0], expected[:, 0])  # integer counts: exact
    scale = float64_sums(frames, np.abs(weights), origin)  # sum |I w|: the size of the rounding
    np.testing.assert_array_less(np.abs(sums - expected), 1e-14 * scale + 1e-300)
    if n_frames > 2:
        assert not sums[n_frames // 2].any()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.int64, np.float32, np.float64, bool])
def test_weighted_frame_sums_read_every_frame_dtype(dtype):
    rng = np.random.default_rng(5)
    frames = (rng.random((6,) + FRAME) * 200).astype(dtype)
    weights = rng.normal(0.0, 1.0, (4, 20, 30)).astype(np.float32)
    np.testing.assert_allclose(
        weighted_frame_sums(frames, weights, (7, 3)), float64_sums(frames, weights, (7, 3)), rtol=1e-12, atol=1e-9
    )


def test_weighted_frame_sums_of_strided_frames():
    frames = np.random.default_rng(6).integers(0, 1000, (8, 64, 64), dtype=np.uint16)
    weights = np.random.default_rng(7).normal(0.0, 1.0, (4, 30, 64)).astype(np.float32)
    view = frames[::2].transpose(0, 2, 1)  # neither C- nor F-contiguous
    np.testing.assert_allclose(
        weighted_frame_sums(view, weights, (10, 0)), float64_sums(view, weights, (10, 0)), rtol=1e-12, atol=1e-9
    )


def test_nan_in_a_frame_makes_only_its_sums_nan():
    frames = np.random.default_rng(8).random((5,) + FRAME).astype(np.float32)
    frames[2, 10, 10] = np.nan
    weights = np.ones((4,) + FRAME, dtype=np.float32)
    weights[1:, 10, 10] = 0.0  # a weight of 0 does not hide it (0 x NaN = NaN)
    sums = weighted_frame_sums(frames, weights)
    assert np.isnan(sums[2]).all()
    keep = [0, 1, 3, 4]
    np.testing.assert_allclose(sums[keep], float64_sums(frames[keep], weights, (0, 0)), rtol=1e-12)


def test_weighted_frame_sums_refuse_bad_shapes():
    with pytest.raises(ValueError, match="not inside"):
        weighted_frame_sums(np.zeros((1,) + FRAME), np.zeros((4, 10, 10)), (60, 0))
    with pytest.raises(ValueError, match="weights"):
        weighted_frame_sums(np.zeros((1,) + FRAME), np.zeros((3, 10, 10)))
    with pytest.raises(ValueError, match="out must be"):
        weighted_frame_sums(np.zeros((5,) + FRAME), np.zeros((4, 10, 10)), out=np.zeros((4, 4)))


@pytest.mark.parametrize("n_threads", [1, 2])
def test_accumulated_sums_equal_a_float64_reference_with_roi_mask_and_background(geometry, thetas, n_threads):
    """Sample-frame sums from q_vectors (no lab-frame centring, no float32 weights) over
    random uint16 frames with saturated and empty ones, as batches large enough for threads."""
    rng = np.random.default_rng(9)
    th = thetas[[3, 10, 17]]
    frames = rng.integers(0, 65536, (3, 4, 20) + FRAME, dtype=np.uint16)
    frames[0, 1, 2] = 65535
    frames[2, 3, 4] = 0
    mask = rng.random(FRAME) < 0.05
    background = rng.uniform(0.0, 3.0, FRAME)
    roi = (3, 50, 7, 61)
    acc = SxdmAccumulator(geometry, th, (4, 20), FRAME, background, mask, roi, np.zeros((3, 2)), n_threads)
    iy, ix = np.divmod(np.arange(80), 20)
    for t in range(3):
        acc.add_many(t, iy, ix, frames[t].reshape(-1, *FRAME))
    maps = acc.result(particle_mask=np.ones((4, 20), dtype=bool))

    inside = np.zeros(FRAME, dtype=bool)
    inside[roi[0] : roi[1], roi[2] : roi[3]] = True
    counts = (frames - background) * (inside & ~mask)  # (t, iy, ix, rows, cols) float64
    intensity = counts.sum(axis=(0, 3, 4))
    q_sum = np.einsum("tyxrc,tirc->iyx", counts, q_vectors(geometry, th, FRAME))
    np.testing.assert_allclose(maps.intensity, intensity, rtol=1e-12)
    q = q_sum / intensity  # float32 weights of q_lab - q0: ~1e-9 of |Q| in every component
    np.testing.assert_allclose(maps.q, q, rtol=0, atol=1e-9 * np.abs(q).max())


# --- registration -------------------------------------------------------------------------


def test_cross_correlation_finds_subpixel_shifts_like_scikit_image():
    registration = pytest.importorskip("skimage.registration")
    y, x = np.mgrid[:24, :24]
    blob = np.exp(-((y - 11.3) ** 2 / 18 + (x - 12.1) ** 2 / 10))
    for shift in ((1.3, -0.7), (-2.0, 2.0), (0.26, 0.5)):
        moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(blob), shift)).real
        found = cross_correlation_shift(blob, moved, upsample_factor=100)
        np.testing.assert_allclose(found, -np.array(shift), atol=0.011)
        reference = registration.phase_cross_correlation(
            blob, moved, upsample_factor=100, normalization=None
        )[0]
        np.testing.assert_allclose(found, reference, atol=1e-9)


def test_register_maps_returns_shifts_in_the_frame_of_the_brightest_map():
    y, x = np.mgrid[:20, :20]
    blob = np.clip(6.0 - np.hypot(y - 9.5, x - 9.5), 0, 1)
    stack = np.stack(
        [ndimage.shift(blob, s, order=1) * w for s, w in (((1, 0), 0.5), ((0, 0), 1.0), ((-2, 1), 0.3))]
    )
    np.testing.assert_allclose(register_maps(stack), [[-1, 0], [0, 0], [2, -1]], atol=0.021)


def test_register_maps_interpolates_the_shifts_of_nearly_empty_maps():
    y, x = np.mgrid[:20, :20]
    blob = np.clip(6.0 - np.hypot(y - 9.5, x - 9.5), 0, 1)
    rng = np.random.default_rng(7)
    speck = np.zeros((20, 20))
    speck[rng.integers(0, 20, 3), rng.integers(0, 20, 3)] = 1.0  # a rocking-curve tail: 3 counts
    maps = [
        speck,
        blob * 50,
        speck,
        ndimage.shift(blob, (0, 1), order=1) * 60,
        speck,
        ndimage.shift(blob, (0, 2), order=1) * 40,
    ]
    stack = np.stack(maps)  # drift 0, 1, 2 pixels along columns at positions 1, 3, 5
    shifts = register_maps(stack, positions=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(shifts[:, 1], [1.0, 1.0, 0.5, 0.0, -0.5, -1.0], atol=0.021)  # frame of map 3
    np.testing.assert_allclose(shifts[:, 0], 0.0, atol=0.021)


@pytest.fixture(scope="module")
def drifting(geometry, thetas):
    """20 x 20 raster with integer drift up to 2 pixels along each axis, none at the central angle."""
    truth = particle(20)
    step = np.arange(thetas.size) - thetas.size // 2
    drift = np.stack([np.round(2.0 * step / 10), np.round(-1.5 * step / 10)], axis=1)
    frames = render_frames(
        geometry,
        thetas,
        truth["q"],
        truth["amplitude"],
        PEAK_SIGMA,
        FRAME,
        BACKGROUND,
        rng=np.random.default_rng(5),
        drift_px=drift,
        dtype=np.uint16,
    )
    return truth, drift, frames


def test_registration_corrects_drift_between_angles(drifting, thetas, geometry):
    truth, drift, frames = drifting
    maps = strain_maps(frames, thetas, geometry, background=BACKGROUND)
    bright = frames.sum(axis=(1, 2, 3, 4)) > 0.2 * frames.sum(axis=(1, 2, 3, 4)).max()
    np.testing.assert_allclose(maps.shifts_px[bright], -drift[bright], atol=0.1)
    assert_recovers(maps, truth)


def test_drift_ruins_the_maps_without_registration(drifting, thetas, geometry):
    truth, _, frames = drifting
    maps = strain_maps(frames, thetas, geometry, background=BACKGROUND, registration=False)
    with pytest.raises(AssertionError):
        assert_recovers(maps, truth, tilt_tol=10 * TILT_TOL_DEG)


# --- Gaussian refinement ------------------------------------------------------------------


def test_gaussian_refinement_is_unbiased_where_the_rocking_curve_is_cut(geometry):
    thetas = geometry.two_theta_deg / 2 + np.linspace(-0.15, 0.5, 14)  # cuts the peak at ~1 sigma
    theta_xz = np.linspace(-0.05, 0.05, 9).reshape(3, 3)
    d = D003_A * (1 + np.linspace(-5e-4, 5e-4, 9).reshape(3, 3).T)
    q = q_from_d_tilts(d, 0.0, theta_xz)
    frames = render_frames(
        geometry, thetas, q, np.full((3, 3), 300.0), PEAK_SIGMA, FRAME, 0.2, rng=np.random.default_rng(6)
    )
    com = strain_maps(frames, thetas, geometry, background=0.2, registration=False)
    fitted = refine_gaussian(frames, thetas, geometry, com, background=0.2)
    com_xz, fit_xz = (d_tilts_from_q(m.q)[2] for m in (com, fitted))
    assert np.abs(com_xz - theta_xz).max() > 0.02  # centre of mass pulled into the measured range
    np.testing.assert_array_less(np.abs(fit_xz - theta_xz), TILT_TOL_DEG)
    np.testing.assert_array_less(np.abs(d_tilts_from_q(fitted.q)[0] / d - 1), STRAIN_TOL)


def test_gaussian_refinement_agrees_with_centre_of_mass_on_clean_data(
    frames16, thetas, geometry, maps16, truth16
):
    corner = (slice(None), slice(4, 8), slice(4, 8))
    com = strain_maps(frames16[corner], thetas, geometry, background=BACKGROUND, registration=False)
    fitted = refine_gaussian(frames16[corner], thetas, geometry, com, background=BACKGROUND)
    np.testing.assert_allclose(fitted.q[:, com.mask], com.q[:, com.mask], atol=3e-5)
    np.testing.assert_allclose(fitted.q[:, com.mask], truth16["q"][:, 4:8, 4:8][:, com.mask], atol=3e-5)


def test_repeated_raster_pixels_in_one_batch_add_up(frames16, thetas, geometry):
    acc = SxdmAccumulator(geometry, thetas, (16, 16), FRAME)
    acc.add_many(3, [5, 5, 5], [7, 7, 8], frames16[3, 5, [7, 7, 8]])
    single = frames16[3, 5, 7].sum(dtype=np.float64)
    assert acc.intensity_by_angle[3, 5, 7] == pytest.approx(2 * single, rel=1e-7)
    assert acc.intensity_by_angle[3, 5, 8] == pytest.approx(frames16[3, 5, 8].sum(dtype=np.float64), rel=1e-7)


# --- alignment: rocking-curve fit and fluorescence centroid ---------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rocking_curve_fit_recovers_centre_and_fwhm_of_a_noisy_gaussian(seed):
    rng = np.random.default_rng(seed)
    theta = np.linspace(5.5, 6.5, 21)
    centre, sigma, amplitude, background = 6.037, 0.12, 2000.0, 50.0
    counts = rng.poisson(amplitude * np.exp(-0.5 * ((theta - centre) / sigma) ** 2) + background)
    fit = fit_rocking_curve(theta, counts)
    assert fit.centre_deg == pytest.approx(centre, abs=0.003)
    assert fit.fwhm_deg == pytest.approx(2.0 * np.sqrt(2.0 * np.log(2.0)) * sigma, rel=0.03)
    assert fit.amplitude == pytest.approx(amplitude, rel=0.05)
    assert fit.background == pytest.approx(background, abs=15)


def test_rocking_curve_fit_is_exact_on_a_noiseless_off_grid_gaussian():
    theta = np.linspace(-1.0, 1.0, 15)
    fit = fit_rocking_curve(theta, 300.0 * np.exp(-0.5 * ((theta - 0.2345) / 0.3) ** 2) + 7.0)
    assert (fit.centre_deg, fit.fwhm_deg, fit.amplitude, fit.background) == (
        pytest.approx(0.2345, abs=1e-7), pytest.approx(FWHM_PER_SIGMA * 0.3, rel=1e-6),
        pytest.approx(300.0, rel=1e-6), pytest.approx(7.0, abs=1e-4),
    )


@pytest.mark.parametrize("theta, counts, match", [
    (np.linspace(0, 1, 21), np.full(21, 7.0), "flat"),
    (np.linspace(0, 1, 3), [1.0, 5.0, 1.0], ">= 4"),
    (np.linspace(0, 1, 5), [1.0, 5.0, np.nan, 1.0, 0.0], "finite"),
    # a rising edge only: the Gaussian's centre lies beyond the scanned range
    (np.linspace(0, 1, 11), 100.0 * np.exp(-0.5 * ((np.linspace(0, 1, 11) - 1.6) / 0.3) ** 2), "outside"),
])
def test_rocking_curve_fit_refuses_curves_without_a_peak_in_range(theta, counts, match):
    with pytest.raises(ValueError, match=match):
        fit_rocking_curve(theta, counts)


def test_xrf_centroid_of_a_synthetic_blob_is_its_centre():
    ys, xs = np.linspace(-2.0, 2.0, 41), np.linspace(-3.0, 1.0, 41)  # 0.1 um steps
    yy, xx = np.meshgrid(ys, xs, indexing="ij")

    def blob(y0, x0):
        return 800.0 * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 0.3**2)) + 40.0

    # centred on a raster node the thresholded weights are symmetric about it: exact
    assert xrf_centroid(ys, xs, blob(0.6, -1.3)) == pytest.approx((0.6, -1.3), abs=1e-12)
    # off the nodes, with Poisson noise: within a third of a step
    counts = np.random.default_rng(3).poisson(blob(0.63, -1.27))
    assert xrf_centroid(ys, xs, counts) == pytest.approx((0.63, -1.27), abs=0.03)


def test_xrf_centroid_ignores_the_background_below_threshold():
    ys, xs = np.arange(10.0), np.arange(12.0)
    counts = np.full((10, 12), 5.0)
    counts[2:4, 8:10] = 50.0  # particle: centre (2.5, 8.5)
    counts[7, 1] = 20.0  # a weaker speck below half the particle's counts
    assert xrf_centroid(ys, xs, counts) == pytest.approx((2.5, 8.5))
    assert xrf_centroid(ys, xs, counts, threshold=0.2) != pytest.approx((2.5, 8.5))


@pytest.mark.parametrize("counts, threshold, match", [
    (np.ones((3, 4)), 0.5, "flat"),
    (np.ones((4, 3)), 0.5, "counts must be"),
    (np.eye(3, 4), 1.5, "threshold"),
])
def test_xrf_centroid_refuses_bad_maps(counts, threshold, match):
    with pytest.raises(ValueError, match=match):
        xrf_centroid(np.arange(3.0), np.arange(4.0), counts, threshold)
