"""Registration of SXDM maps between rocking angles (sample drift) and bilinear shift-and-add.

Shifts follow the scikit-image convention: the shift (rows, cols), in raster pixels, that
must be applied to a moving map to register it with the reference; applying shift s moves
the value at pixel p to p + s (`splat_add`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def splat_add(
    target: NDArray[np.float64],
    iy: ArrayLike,
    ix: ArrayLike,
    values: ArrayLike,
    shift_px: ArrayLike,
) -> None:
    """Add values (B, C) of raster pixels (iy, ix) to target (ny, nx, C) at (iy, ix) + shift_px.

    shift_px is (B, 2) or (2,) (rows, cols), fractional allowed: each value is split
    bilinearly over the four pixels around its destination, weights (1 - f) or f per axis;
    parts landing outside the raster are dropped. Applied to whole maps this equals
    `scipy.ndimage.shift(map, shift, order=1, mode="constant")` away from the edges, and it
    is linear, so shifting sums of I and of I q' and dividing afterwards gives
    intensity-weighted interpolation of Q.
    """
    ny, nx, n_chan = target.shape
    values = np.asarray(values, dtype=np.float64).reshape(-1, n_chan)
    shift = np.broadcast_to(np.asarray(shift_px, dtype=np.float64), (values.shape[0], 2))
    fy = np.asarray(iy, dtype=np.float64) + shift[:, 0]
    fx = np.asarray(ix, dtype=np.float64) + shift[:, 1]
    y0, x0 = np.floor(fy), np.floor(fx)
    wy1, wx1 = fy - y0, fx - x0
    flat_target = target.reshape(-1, n_chan)
    for dy, wy in ((0, 1.0 - wy1), (1, wy1)):
        for dx, wx in ((0, 1.0 - wx1), (1, wx1)):
            yy, xx, w = (y0 + dy).astype(np.intp), (x0 + dx).astype(np.intp), wy * wx
            keep = (w > 0.0) & (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            np.add.at(flat_target, yy[keep] * nx + xx[keep], values[keep] * w[keep, None])


def shift_maps(maps: ArrayLike, shifts_px: ArrayLike) -> NDArray[np.float64]:
    """Shift each map of a stack (n, ny, nx[, C]) by its shift (n, 2) with `splat_add`."""
    stack = np.asarray(maps, dtype=np.float64)
    squeeze = stack.ndim == 3
    if squeeze:
        stack = stack[..., None]
    n, ny, nx, n_chan = stack.shape
    out = np.zeros((n, ny, nx, n_chan))
    iy, ix = (a.ravel() for a in np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij"))
    for i, shift in enumerate(np.asarray(shifts_px, dtype=np.float64).reshape(n, 2)):
        splat_add(out[i], iy, ix, stack[i].reshape(-1, n_chan), shift)
    return out[..., 0] if squeeze else out


def cross_correlation_shift(
    reference: ArrayLike, moving: ArrayLike, upsample_factor: int = 50
) -> NDArray[np.float64]:
    """Subpixel shift (rows, cols) registering `moving` with `reference`.

    Cross-correlation c(y) = sum_x ref(x + y) mov(x) = IFFT(F_ref conj(F_mov)) peaks at the
    shift; the integer peak is refined to 1/upsample_factor pixel by evaluating the
    band-limited c(y) on a 1.5-pixel patch with a matrix-multiply DFT (Guizar-Sicairos,
    Thurman & Fienup, Opt. Lett. 33, 156 (2008); the method of skimage's
    `phase_cross_correlation` without phase normalisation, which on small noisy maps of a
    compact particle is less robust than plain correlation).
    """
    ref = np.asarray(reference, dtype=np.float64)
    mov = np.asarray(moving, dtype=np.float64)
    product = np.fft.fft2(ref) * np.conj(np.fft.fft2(mov))
    corr = np.fft.ifft2(product).real
    peak = np.array(np.unravel_index(np.argmax(corr), corr.shape), dtype=np.float64)
    size = np.array(corr.shape, dtype=np.float64)
    peak = np.where(peak > np.fix(size / 2), peak - size, peak)
    if upsample_factor <= 1:
        return peak
    region = int(np.ceil(1.5 * upsample_factor))
    offsets = (np.arange(region) - region // 2) / upsample_factor
    kernels = [
        np.exp(2j * np.pi * np.outer(centre + offsets, np.fft.fftfreq(n)))
        for centre, n in zip(np.round(peak * upsample_factor) / upsample_factor, corr.shape)
    ]
    fine = (kernels[0] @ product @ kernels[1].T).real
    best = np.unravel_index(np.argmax(fine), fine.shape)
    return np.round(peak * upsample_factor) / upsample_factor + offsets[list(best)]


def register_maps(
    maps: ArrayLike,
    upsample_factor: int = 50,
    saturation: float = 0.2,
    min_fraction: float = 0.02,
    positions: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Shifts (n, 2) (rows, cols; raster pixels) registering each map of a stack (n, ny, nx).

    Each map is first clipped to [0, saturation * its 99th percentile]: the per-angle
    intensity maps of an SXDM scan differ by which parts of the particle diffract at that
    angle (strain and tilt), not only by drift; saturated maps show the particle's outline,
    which drift alone moves (unsaturated maps bias the shifts by ~0.1-0.2 pixel at the
    rocking-curve tails, see tests). Then two passes: every map against the brightest one
    (largest sum), then against the sum of the maps registered in the first pass (less
    noisy). Maps holding less than min_fraction of the brightest map's intensity (rocking
    curve tails: a few counts, no outline) get shifts interpolated linearly in `positions`
    (e.g. the rocking angles; default the map index) between the registered maps, constant
    beyond them. The output is in the frame of the brightest map: its shift is exactly zero.
    """
    stack = np.asarray(maps, dtype=np.float64)
    if stack.ndim != 3:
        raise ValueError(f"maps must be a stack (n, ny, nx), got shape {stack.shape}")
    totals = stack.sum(axis=(1, 2))
    brightest = int(np.argmax(totals))
    strong = totals >= min_fraction * totals[brightest]
    positive = np.clip(stack[strong], 0.0, None)
    outlines = np.minimum(positive, saturation * np.percentile(positive, 99, axis=(1, 2))[:, None, None])
    reference = stack[brightest].clip(0.0, None)
    reference = np.minimum(reference, saturation * np.percentile(reference, 99))
    shifts = np.array([cross_correlation_shift(reference, m, upsample_factor) for m in outlines])
    reference = shift_maps(outlines, shifts).sum(axis=0)
    shifts = np.array([cross_correlation_shift(reference, m, upsample_factor) for m in outlines])
    x = (
        np.arange(stack.shape[0], dtype=np.float64)
        if positions is None
        else np.asarray(positions, dtype=np.float64)
    )
    order = np.argsort(x[strong])
    full = np.stack([np.interp(x, x[strong][order], shifts[order, axis]) for axis in range(2)], axis=1)
    return full - full[brightest]
