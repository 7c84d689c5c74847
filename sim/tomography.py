"""Parallel-beam forward projection (the Radon transform) of the simulated microscope.

The simulator's projections (`sim.txm.TxmSample.projections`) and the tests of the
reconstruction need line integrals of a voxel volume in the conventions of
`analysis.txm` (detector column j at t = j - center from the rotation axis; angles in
degrees); `forward_project` computes them with the gridding operator that
`analysis.txm.reconstruct` backprojects with (`analysis.txm.PolarGrid`), run forwards.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.typing import ArrayLike

from nanostrain.analysis.txm import SLICES_PER_BATCH, polar_grid

__all__ = ["forward_project"]


def forward_project(
    image: ArrayLike, angles_deg: ArrayLike, center: float | None = None
) -> np.ndarray:
    """Parallel-beam Radon transform by the Fourier slice theorem.

    p_theta(t) = integral f(x, y) delta(x cos theta + y sin theta - t) dx dy, computed as
    p_theta = IFFT_w[ F(w cos theta, w sin theta) ] with F the Fourier transform of the
    band-limited (sinc-interpolated) pixel image, sampled on the polar grid of
    `analysis.txm.reconstruct` by the same gridding operator (`PolarGrid.project`, a
    type-2 non-uniform FFT), in the same conventions. Against the exact line integrals of
    a Shepp-Logan phantom its relative RMS error is 2.3 % at 128 pixels and 0.3 % at 1024 (the pixelisation of
    sharp edges); at 1024 pixels x 721 angles it is ~250x faster than
    ``skimage.transform.radon`` (benchmarks/bench_txm.py).

    Parameters
    ----------
    image : (n, n) or (n_rows, n, n), attenuation per pixel.
    angles_deg : (n_angles,) degrees.
    center : detector column of the rotation axis; None = n//2. The detector has
        n columns.

    Returns
    -------
    (n_angles, n) sinogram or (n_angles, n_rows, n) stack, float32, pixels x attenuation.
    """
    data = np.asarray(image, dtype=np.float32)
    if data.ndim not in (2, 3) or data.shape[-1] != data.shape[-2]:
        raise ValueError(f"image must be (n, n) or (n_rows, n, n), got shape {data.shape}")
    volume = data[None] if data.ndim == 2 else data
    n = volume.shape[-1]
    angles = np.asarray(angles_deg, dtype=np.float64)
    geometry = polar_grid(n, angles)
    axis = geometry.rotation_axis(center)
    phase = np.conj(geometry.detector_phase(axis)).astype(np.complex64)
    sinograms = np.empty((angles.size, volume.shape[0], n), dtype=np.float32)
    for start in range(0, volume.shape[0], SLICES_PER_BATCH):
        block = volume[start : start + SLICES_PER_BATCH]
        spectra = geometry.project(block) * phase[None, :, None]
        projections = scipy.fft.irfft(spectra, n=geometry.length, axis=1)[:, :n]
        sinograms[:, start : start + block.shape[0]] = np.moveaxis(projections, 1, -1)
    return sinograms[:, 0] if data.ndim == 2 else sinograms
