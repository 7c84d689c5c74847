"""Synthetic SXDM frames from a known per-pixel Q field (tests, benchmarks, the simulated nanoprobe).

Each raster pixel (iy, ix) holds one Bragg peak: an isotropic 3D Gaussian in reciprocal space
centred on its sample-frame Q (1/A),

    I(q') = A exp(-|q' - Q|^2 / (2 sigma^2)) + background,

sampled at the q' of every detector pixel at every rocking angle (`sxdm_geometry`). Only a
window of +-`N_SIGMA` sigma around the point of the Ewald sphere nearest to Q is evaluated,
so the cost scales with the peak size, not with the detector size.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray
from scipy import ndimage

from nanostrain.analysis.sxdm_geometry import SxdmGeometry, detector_lab_q, pixel_of_kf, sample_rotation

__all__ = ["N_SIGMA", "PEAKS_PER_CHUNK", "render_frames"]

N_SIGMA = 5.0
"""Half-width of the rendered region, in peak sigmas (exp(-12.5) ~ 4e-6 of the peak is dropped)."""

PEAKS_PER_CHUNK = 512
"""Peaks evaluated together (bounds the temporary memory to ~3*8*512*window^2 bytes)."""


def render_frames(
    geometry: SxdmGeometry,
    thetas_deg: ArrayLike,
    q_field: ArrayLike,
    intensity_map: ArrayLike,
    peak_sigma_invA: float,
    frame_shape: tuple[int, int],
    background: float | ArrayLike = 0.0,
    rng: np.random.Generator | None = None,
    drift_px: ArrayLike | None = None,
    dtype: DTypeLike = np.float32,
) -> NDArray:
    """Render the 5D SXDM dataset (n_theta, ny, nx, rows, cols) of a known Q field.

    geometry: detector geometry; thetas_deg: rocking angles (deg); q_field (3, ny, nx):
    sample-frame Q of each raster pixel (1/A, e.g. from `q_from_d_tilts`); intensity_map
    (ny, nx): peak amplitude A, expected counts in a detector pixel at the exact Bragg
    condition (0 = no crystal); peak_sigma_invA: sigma of the Gaussian (1/A);
    background: expected counts per pixel (scalar or (rows, cols)); rng: if given, each
    frame is a Poisson draw of its expectation, else the expectation itself; drift_px
    (n_theta, 2): sample drift (rows, cols) in raster pixels at each angle, so the maps seen
    at angle t are the true maps shifted by +drift (bilinear, `scipy.ndimage.shift` order 1);
    dtype: output dtype (integer dtypes saturate at their maximum, as a detector does).
    """
    thetas = np.atleast_1d(np.asarray(thetas_deg, dtype=np.float64))
    q_field = np.asarray(q_field, dtype=np.float64)
    amplitude = np.asarray(intensity_map, dtype=np.float64)
    if q_field.ndim != 3 or q_field.shape[0] != 3 or amplitude.shape != q_field.shape[1:]:
        raise ValueError(
            f"q_field must be (3, ny, nx) and intensity_map (ny, nx); got {q_field.shape}, {amplitude.shape}"
        )
    if not peak_sigma_invA > 0:
        raise ValueError(f"peak_sigma_invA must be > 0, got {peak_sigma_invA}")
    ny, nx = amplitude.shape
    rows, cols = int(frame_shape[0]), int(frame_shape[1])
    if drift_px is not None and np.shape(drift_px) != (thetas.size, 2):
        raise ValueError(f"drift_px must be (n_theta={thetas.size}, 2), got {np.shape(drift_px)}")
    frames = np.empty((thetas.size, ny, nx, rows, cols), dtype=np.float32)
    frames[...] = np.asarray(background, dtype=np.float32)
    flat = frames.reshape(-1, rows, cols)
    for t in range(thetas.size):
        q_t, a_t = q_field, amplitude
        if drift_px is not None:
            shift = np.asarray(drift_px, dtype=np.float64)[t]
            a_t = ndimage.shift(amplitude, shift, order=1, mode="constant", cval=0.0)
            q_t = np.stack([ndimage.shift(c, shift, order=1, mode="nearest") for c in q_field])
        lit = np.flatnonzero(a_t > 0)
        for start in range(0, lit.size, PEAKS_PER_CHUNK):
            chosen = lit[start : start + PEAKS_PER_CHUNK]
            _add_peaks(
                flat,
                t * ny * nx + chosen,
                geometry,
                thetas[t],
                q_t.reshape(3, -1)[:, chosen],
                a_t.ravel()[chosen],
                peak_sigma_invA,
            )
    return _to_counts(frames, rng, dtype)


def _add_peaks(
    frames: NDArray[np.float32],
    frame_index: NDArray[np.intp],
    geometry: SxdmGeometry,
    theta_deg: float,
    q: NDArray[np.float64],
    amplitude: NDArray[np.float64],
    sigma: float,
) -> None:
    """Add one Gaussian peak (centre q[:, i], amplitude[i]) to each frames[frame_index[i]].

    The window is centred on the pixel of K (q_lab + K z)/|q_lab + K z| (q_lab = M^T Q),
    the point of the Ewald sphere nearest to Q; peaks farther than N_SIGMA sigma from the
    sphere are skipped. Windows are clipped inside the frame.
    """
    rows, cols = frames.shape[1:]
    k = geometry.k_invA
    lab_full = detector_lab_q(geometry, (rows, cols))
    q_lab = sample_rotation(theta_deg).T @ q  # M^T Q: where each peak sits in the lab frame
    k_f = q_lab + np.array([[0.0], [0.0], [k]])
    k_norm = np.sqrt(np.sum(k_f * k_f, axis=0))
    near = (np.abs(k_norm - k) < N_SIGMA * sigma) & (k_f[0] > 0.0)
    if not near.any():
        return
    row, col = pixel_of_kf(geometry, k_f[:, near] * (k / k_norm[near]))
    half = int(np.ceil(N_SIGMA * sigma / (k * geometry.pixel_rad))) + 1
    win_r, win_c = min(2 * half + 1, rows), min(2 * half + 1, cols)
    r0 = np.clip(np.rint(row).astype(np.intp) - half, 0, rows - win_r)
    c0 = np.clip(np.rint(col).astype(np.intp) - half, 0, cols - win_c)
    rr = (r0[:, None] + np.arange(win_r))[:, :, None]
    cc = (c0[:, None] + np.arange(win_c))[:, None, :]
    # |q' - Q| = |q_lab - M^T Q|: the rotation preserves distances, so stay in the lab frame.
    dist2 = np.sum((lab_full[:, rr, cc] - q_lab[:, near, None, None]) ** 2, axis=0)
    frames[frame_index[near][:, None, None], rr, cc] += (
        amplitude[near][:, None, None] * np.exp(-dist2 / (2.0 * sigma * sigma))
    ).astype(np.float32)


def _to_counts(expected: NDArray[np.float32], rng: np.random.Generator | None, dtype: DTypeLike) -> NDArray:
    """Poisson draw (if rng) of the expected counts, cast to dtype (saturating integers)."""
    dtype = np.dtype(dtype)
    limit = np.iinfo(dtype).max if dtype.kind in "ui" else None
    if rng is None and limit is None:
        return expected.astype(dtype, copy=False)
    out = np.empty(expected.shape, dtype=dtype)
    for i in range(expected.shape[0]):  # one angle at a time bounds the int64 temporary
        counts = rng.poisson(expected[i]) if rng is not None else np.rint(expected[i])
        out[i] = np.minimum(counts, limit) if limit is not None else counts
    return out
