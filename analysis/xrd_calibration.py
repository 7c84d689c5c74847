"""Detector geometry from a calibrant image (CeO2, SRM 674b): beam centre, distance, tilt.

Two stages, both on the image alone (the wavelength is known from the monochromator):

1. **Coarse beam centre** (`ring_centre`): the rings are concentric about the direct
   beam, so the radial profile of a sector and that of the opposite sector are the same
   profile shifted by twice the centre error along that direction. Cross-correlating
   opposite sectors gives, per direction u_k, the lag L_k = 2 e.u_k; a least-squares fit
   over the directions gives the error vector e; iterate. This is the principle of
   pyFAI's own centre check (``pyFAI.gui.cli_calibration.AbstractCalibration.validate_center``,
   which cross-correlates radial profiles 180 deg apart); that method belongs to the
   interactive calibration object (peak picker, GUI state) and only reports, so the same
   measurement is made here on the image with numpy and used to move the start. It works
   from tens of pixels off, where pyFAI's ring assignment (a band of a quarter of the ring
   spacing around each expected ring) would put control points on wrong rings.
2. **Refinement** with pyFAI (`pyFAI.goniometer.SingleGeometry`): control points picked on
   each ring by pyFAI's massif peak picker (``extract_cp``), least-squares refinement of the
   PONI parameters (``GeometryRefinement.refine3``), and again from the refined geometry
   (ring assignment improves as the geometry does). The first pass keeps the tilt of the
   start; the next ones refine all of ``refine`` (default dist, poni1, poni2, rot1, rot2;
   rot3 is degenerate with the azimuth origin for a flat panel and stays fixed).

Residual of control point p on ring k: 2theta_calc(p) - 2theta_k, with
2theta_k = 2 arcsin(lambda / (2 d_k)); the refinement minimises their sum of squares and
`Calibration.rings` reports their rms per ring.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from pyFAI.calibrant import get_calibrant
from pyFAI.geometry import Geometry
from pyFAI.goniometer import SingleGeometry
from scipy.ndimage import uniform_filter1d

from nanostrain.analysis.units import INV_NM_PER_INV_A, fwhm_q_to_two_theta
from nanostrain.analysis.xrd import Integrator, fit_reflection, tch_gaussian_fwhm

#: The PONI parameters refined by default (pyFAI names; rot3 fixed).
PONI_PARAMETERS = ("dist", "poni1", "poni2", "rot1", "rot2")
_ALL_PARAMETERS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")
MIN_RINGS = 3
#: z-score a ring must reach over its background to count as seen (`ring_contrast`)
MIN_CONTRAST = 10.0


@dataclass(frozen=True)
class RingResidual:
    """Fit residual of one calibrant ring: ``ring`` (index in the calibrant's d list,
    0 = largest d), ``hkl``, ``d_A`` (angstrom), ``two_theta_deg`` (expected position),
    ``n_points`` (control points on it), ``rms_2theta_deg`` (rms of 2theta_calc - 2theta_k),
    ``contrast`` (z-score of the ring over its background, see `ring_contrast`)."""

    ring: int
    hkl: tuple[int, int, int]
    d_A: float
    two_theta_deg: float
    n_points: int
    rms_2theta_deg: float
    contrast: float


@dataclass(frozen=True)
class Calibration:
    """A refined geometry: ``geometry`` (pyFAI AzimuthalIntegrator), ``rms_2theta_deg``
    (rms 2theta residual of all control points, degrees), ``n_points``, ``rings`` (the
    residual per ring used), ``centre_shift_px`` (row, column move of the beam centre made
    by the coarse stage, pixels)."""

    geometry: Geometry
    rms_2theta_deg: float
    n_points: int
    rings: tuple[RingResidual, ...]
    centre_shift_px: tuple[float, float]

    @property
    def n_rings(self) -> int:
        return len(self.rings)


def _opposite_sector_lags(image: np.ndarray, centre: tuple[float, float], max_shift_px: float, n_sectors: int):
    """Directions u_k (row, col) and lags L_k (px) of the opposite-sector correlation."""
    rows, cols = np.indices(image.shape, dtype=np.float64)
    dy, dx = rows - centre[0], cols - centre[1]
    radius = np.hypot(dy, dx)
    sector = (np.floor((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * n_sectors).astype(np.int64)) % n_sectors
    n_bins = int(radius.max()) + 1
    index = (sector * n_bins + radius.astype(np.int64)).ravel()
    sums = np.bincount(index, weights=image.ravel(), minlength=n_sectors * n_bins).reshape(n_sectors, n_bins)
    counts = np.bincount(index, minlength=n_sectors * n_bins).reshape(n_sectors, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        profiles = sums / counts  # mean intensity per 1 px radial bin, NaN where empty
    max_lag = int(np.ceil(2 * max_shift_px)) + 1
    directions, lags = [], []
    for k in range(n_sectors // 2):
        a, b = profiles[k], profiles[k + n_sectors // 2]
        both = np.isfinite(a) & np.isfinite(b)
        both[:5] = False  # the few innermost bins hold a handful of pixels
        if both.sum() < max_lag + 32:
            continue
        first, last = np.flatnonzero(both)[[0, -1]]
        a, b = a[first:last + 1].copy(), b[first:last + 1].copy()
        a[~np.isfinite(a)] = np.nanmean(a)
        b[~np.isfinite(b)] = np.nanmean(b)
        # high-pass: rings minus the smooth background (window ~ 31 px)
        a -= uniform_filter1d(a, 31, mode="nearest")
        b -= uniform_filter1d(b, 31, mode="nearest")
        if not (np.any(a) and np.any(b)):
            continue
        correlation = np.correlate(a, b, "full")  # index n - 1 + L holds sum_r a(r + L) b(r)
        middle = a.size - 1
        window = correlation[middle - max_lag:middle + max_lag + 1]
        peak = int(np.argmax(window))
        if 0 < peak < window.size - 1:  # parabola through the maximum and its neighbours
            left, top, right = window[peak - 1:peak + 2]
            curvature = left - 2 * top + right
            offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        else:
            offset = 0.0
        phi = -np.pi + (k + 0.5) * 2 * np.pi / n_sectors
        directions.append((np.sin(phi), np.cos(phi)))
        lags.append(peak - max_lag + offset)
    return np.asarray(directions), np.asarray(lags)


def ring_centre(
    image: np.ndarray,
    start_px: tuple[float, float],
    max_shift_px: float = 100.0,
    n_sectors: int = 36,
    iterations: int = 4,
) -> tuple[float, float]:
    """Centre (row, column; array indices, pixels) of the rings of ``image``, searched
    within ``max_shift_px`` of ``start_px`` (see the module docstring, stage 1).

    For the direction u_k of sector k, a ring of true radius R lies at r = R + e.u_k in
    sector k and at R - e.u_k in the opposite one (e: centre error), so the correlation of
    the two high-passed radial profiles peaks at L_k = 2 e.u_k; e = argmin sum_k
    (e.u_k - L_k/2)^2. Raises ValueError if the image shows no ring contrast.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {image.shape}")
    if max_shift_px <= 0:
        raise ValueError(f"max_shift_px must be > 0, got {max_shift_px}")
    centre = np.asarray(start_px, dtype=float)
    for _ in range(iterations):
        directions, lags = _opposite_sector_lags(image, tuple(centre), max_shift_px, n_sectors)
        if len(lags) < 3:
            raise ValueError("no ring contrast around the starting beam centre: no calibrant rings in the image?")
        error, *_ = np.linalg.lstsq(directions, lags / 2, rcond=None)
        centre = centre + error
        if np.hypot(*(centre - start_px)) > max_shift_px:
            raise ValueError(
                f"the rings' centre is more than {max_shift_px} px from the starting beam centre {tuple(start_px)}"
            )
        if np.hypot(*error) < 0.05:
            break
    return float(centre[0]), float(centre[1])


def recentred(geometry: Geometry, centre_px: tuple[float, float]) -> Geometry:
    """A copy of ``geometry`` whose direct beam hits pixel ``centre_px`` (row, column; array
    indices), distance to the beam centre and tilt kept (pyFAI's Fit2D parametrisation,
    whose centre counts pixel i's centre as i + 0.5)."""
    moved = type(geometry)()
    moved.set_config(geometry.get_config())
    fit2d = geometry.getFit2D()
    moved.setFit2D(
        fit2d["directDist"], centerX=centre_px[1] + 0.5, centerY=centre_px[0] + 0.5,
        tilt=fit2d["tilt"], tiltPlanRotation=fit2d["tiltPlanRotation"],
        pixelX=fit2d["pixelX"], pixelY=fit2d["pixelY"],
    )
    return moved


def beam_centre_px(geometry: Geometry) -> tuple[float, float]:
    """Where the direct beam hits the detector (row, column; array indices, pixels)."""
    fit2d = geometry.getFit2D()
    return fit2d["centerY"] - 0.5, fit2d["centerX"] - 0.5


@contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """pyFAI's massif peak picker shuffles its candidate pixels with numpy's global random
    state: seed it for the extraction (and give the caller's state back) so that one frame
    always gives one geometry, live and in replay."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def calibrate_geometry(
    image: np.ndarray,
    initial: Geometry,
    calibrant: str = "CeO2",
    max_rings: int = 10,
    refine: tuple[str, ...] = PONI_PARAMETERS,
    passes: int = 4,
    max_rms_deg: float = 0.02,
    centre_search_px: float = 100.0,
) -> Calibration:
    """Refine the ``refine`` PONI parameters of ``initial`` against the rings of
    ``calibrant`` in ``image`` (see the module docstring); the wavelength stays fixed.

    max_rings: rings used (from the largest d). passes: extraction + refinement rounds.
    centre_search_px: how far (pixels) the coarse stage may move the beam centre; 0 skips it.
    Raises ValueError (the quality gate) if fewer than 3 rings are found or stand out of
    the background (`ring_contrast` >= ``MIN_CONTRAST``), or if the refined geometry leaves
    an rms residual above ``max_rms_deg`` (degrees 2theta): no calibrant rings in the
    image (wrong sample, beam off) or a starting geometry too far off.
    """
    unknown = sorted(set(refine) - set(_ALL_PARAMETERS))
    if unknown:
        raise ValueError(f"cannot refine {unknown}; choose from {_ALL_PARAMETERS}")
    if passes < 1 or max_rings < MIN_RINGS:
        raise ValueError(f"passes must be >= 1 and max_rings >= {MIN_RINGS}, got {passes}, {max_rings}")
    if initial.wavelength is None:
        raise ValueError("the starting geometry has no wavelength")
    image = np.asarray(image, dtype=np.float32)
    if tuple(image.shape) != tuple(initial.detector.shape):
        raise ValueError(f"image shape {image.shape} is not the detector's {initial.detector.shape}")
    reference = get_calibrant(calibrant)
    reference.wavelength = initial.wavelength
    geometry, shift = initial, (0.0, 0.0)
    if centre_search_px > 0:
        start = beam_centre_px(initial)
        found = ring_centre(image, start, max_shift_px=centre_search_px)
        shift = (found[0] - start[0], found[1] - start[1])
        geometry = recentred(initial, found)
    tilt_free = [p for p in refine if not p.startswith("rot")]
    for index in range(passes):
        single = SingleGeometry(
            "calibration", image=image, calibrant=reference, detector=initial.detector, geometry=geometry,
        )
        with _seeded_global_rng(index):
            single.extract_cp(max_rings=max_rings)
        points = np.asarray(single.control_points.getListRing(), dtype=float).reshape(-1, 3)  # (row, col, ring)
        if len(set(points[:, 2].astype(int).tolist())) < MIN_RINGS:
            raise ValueError(
                f"only {len(set(points[:, 2].astype(int).tolist()))} {calibrant} rings found in the image; "
                f"need at least {MIN_RINGS}"
            )
        free = tilt_free if index == 0 and passes > 1 else list(refine)
        single.geometry_refinement.refine3(fix=[p for p in _ALL_PARAMETERS if p not in free])
        geometry = single.get_ai()
    rings, rms = ring_residuals(geometry, points, reference, image)
    seen = [ring for ring in rings if ring.contrast >= MIN_CONTRAST]
    if len(seen) < MIN_RINGS:
        raise ValueError(
            f"only {len(seen)} {calibrant} rings stand out of the background (z >= {MIN_CONTRAST:g}; "
            f"{', '.join(f'{r.hkl}: {r.contrast:.1f}' for r in rings)}); need at least {MIN_RINGS}: "
            "no calibrant in the beam, beam off, or a starting geometry far off"
        )
    if rms > max_rms_deg:
        worst = max(rings, key=lambda r: r.rms_2theta_deg)
        raise ValueError(
            f"the {calibrant} rings found do not fit a geometry (rms {rms:.3g} deg > {max_rms_deg} deg; "
            f"worst ring {worst.hkl} at {worst.rms_2theta_deg:.3g} deg)"
        )
    return Calibration(geometry, rms, int(len(points)), rings, (float(shift[0]), float(shift[1])))


def ring_contrast(image: np.ndarray, two_theta: np.ndarray, ring_2theta: float, pixel_2theta: float) -> float:
    """How far a ring stands out of its background: z = (mean I over |2theta - 2theta_k| <= 2 w)
    - (mean I over 4 w <= |2theta - 2theta_k| <= 8 w), divided by s / sqrt(number of ring
    pixels), s the standard deviation of I over that flank but at least the counting noise
    sqrt(max(mean flank, 1)); w = ``pixel_2theta``, the angle a pixel subtends. Counting
    noise alone gives z ~ N(0, 1). Angles in radians (any one unit), I in counts."""
    offset = np.abs(two_theta - ring_2theta)
    ring = image[offset <= 2 * pixel_2theta]
    flank = image[(offset >= 4 * pixel_2theta) & (offset <= 8 * pixel_2theta)]
    if ring.size == 0 or flank.size < 2:
        return 0.0
    background = float(np.mean(flank))
    spread = max(float(np.std(flank)), np.sqrt(max(background, 1.0)))
    return (float(np.mean(ring)) - background) / (spread / np.sqrt(ring.size))


def ring_residuals(
    geometry: Geometry, points: np.ndarray, reference, image: np.ndarray
) -> tuple[tuple[RingResidual, ...], float]:
    """Per-ring and overall rms of 2theta_calc(p) - 2theta_k (degrees) for control
    ``points`` (rows of row, column, ring index) of the calibrant ``reference``, with each
    ring's `ring_contrast` in ``image``."""
    ring_index = points[:, 2].astype(int)
    expected = np.asarray(reference.get_2th())[ring_index]
    residual = np.degrees(geometry.tth(points[:, 0], points[:, 1]) - expected)
    reflections = reference.config.reflections
    two_theta = geometry.center_array(image.shape, unit="2th_rad", scale=False)
    pixel_2theta = max(geometry.detector.pixel1, geometry.detector.pixel2) / geometry.dist
    rings = []
    for k in np.unique(ring_index):
        on_ring = residual[ring_index == k]
        rings.append(RingResidual(
            ring=int(k),
            hkl=tuple(int(i) for i in reflections[k].hkl),
            d_A=float(reference.dspacing[k]),
            two_theta_deg=float(np.degrees(reference.get_2th()[k])),
            n_points=int(on_ring.size),
            rms_2theta_deg=float(np.sqrt(np.mean(on_ring**2))),
            contrast=ring_contrast(image, two_theta, reference.get_2th()[k], pixel_2theta),
        ))
    return tuple(rings), float(np.sqrt(np.mean(residual**2)))


#: a ring's line is fitted over +- this share of the Q gap to its nearest neighbour
WIDTH_WINDOW_SHARE = 0.45
#: ... and only if that window spans at least this many Q bins each side
WIDTH_WINDOW_BINS = 5.5


@dataclass(frozen=True)
class RingWidth:
    """Width of one calibrant ring in the integrated pattern: ``ring`` (index in the
    calibrant's d list), ``two_theta_deg`` (fitted centre), ``gaussian_fwhm_deg`` and
    ``lorentzian_fwhm_deg`` (degrees 2 theta)."""

    ring: int
    two_theta_deg: float
    gaussian_fwhm_deg: float
    lorentzian_fwhm_deg: float


def ring_widths(image: np.ndarray, geometry: Geometry, calibrant: str, rings: tuple[int, ...]) -> tuple[RingWidth, ...]:
    """Instrumental line widths of a calibrant's ``rings`` (indices in its d list) in
    ``image``, on the refined ``geometry``: the image integrated to I(Q)
    (`analysis.xrd.Integrator`, bins one pixel's Q step wide at small angles), each ring's
    line fitted with one pseudo-Voigt on a linear background (`analysis.xrd.fit_reflection`)
    over +- `WIDTH_WINDOW_SHARE` of the gap to its nearest calibrant line; the total and
    Lorentzian FWHM converted from Q to degrees 2 theta (`fwhm_q_to_two_theta`) and the
    Gaussian FWHM from the two by Thompson-Cox-Hastings (`tch_gaussian_fwhm`). A ring whose
    window spans fewer than `WIDTH_WINDOW_BINS` bins each side, or whose fit fails or
    leaves its window, is left out. The widths include what integration adds (pixel
    footprint, bin width), as in every pattern integrated on this geometry."""
    reference = get_calibrant(calibrant)
    reference.wavelength = geometry.wavelength
    wavelength_A = geometry.wavelength * 1e10
    line_q = 2 * np.pi / np.asarray(reference.dspacing, dtype=float)  # 1/A, d in A
    q_pixels = geometry.qArray(image.shape) / INV_NM_PER_INV_A
    pixel_dq = 2 * np.pi / wavelength_A * max(geometry.pixel1, geometry.pixel2) / geometry.dist
    q_range = (float(q_pixels.min()), float(q_pixels.max()))
    integrator = Integrator(geometry, npt=max(50, int((q_range[1] - q_range[0]) / pixel_dq)), q_range=q_range)
    q, intensity = integrator(np.asarray(image, dtype=np.float32))
    step = float(np.median(np.diff(q)))
    widths = []
    for ring in rings:
        others = np.delete(line_q, ring)
        half = WIDTH_WINDOW_SHARE * float(np.min(np.abs(others - line_q[ring])))
        window = (line_q[ring] - half, line_q[ring] + half)
        if half < WIDTH_WINDOW_BINS * step or window[0] < q_range[0] or window[1] > q_range[1]:
            continue
        try:
            fit = fit_reflection(q, intensity, window, n_phases=1)
        except ValueError:
            continue
        centre = fit.centers[0]
        if not window[0] < centre < window[1] or fit.areas[0] <= 0:
            continue
        total, lorentz = (float(fwhm_q_to_two_theta(w, centre, wavelength_A)) for w in (fit.fwhm[0], fit.fwhm_lorentzian[0]))
        two_theta = float(np.degrees(2 * np.arcsin(centre * wavelength_A / (4 * np.pi))))
        widths.append(RingWidth(int(ring), two_theta, float(tch_gaussian_fwhm(total, lorentz)), lorentz))
    return tuple(widths)
