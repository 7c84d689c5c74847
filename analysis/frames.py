"""Per-frame statistics of detector images (the quick look every beamline wants)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameStatistics:
    """Summary of one frame: counts in ``total``, brightest pixel ``maximum``,
    intensity-weighted centroid ``(row, col)`` in pixels (NaN for an empty frame)."""

    total: float
    maximum: float
    centroid_row: float
    centroid_col: float

    @classmethod
    def not_measured(cls) -> FrameStatistics:
        """The statistics of a frame that could not be measured (a bad frame): all NaN."""
        return cls(float("nan"), float("nan"), float("nan"), float("nan"))


def frame_statistics(frame: np.ndarray, background: float | None = None, mask: np.ndarray | None = None) -> FrameStatistics:
    """Total, maximum and centroid of ``frame - background`` over the pixels ``mask``
    (bool, frame shape, True = excluded; `analysis.frame_quality.assess_frame`'s) leaves.

    centroid_row = sum_i sum_j i * I_ij / sum I, centroid_col likewise with j.
    background: counts per pixel to subtract; None estimates it as the 3-sigma-clipped
    mean of the frame (`clipped_mean`), robust when the feature (beam spot, peak) covers
    a small part of the frame.
    """
    raw = np.asarray(frame, dtype=np.float64)
    if raw.ndim != 2:
        raise ValueError(f"frame must be 2D, got shape {raw.shape}")
    keep = np.ones(raw.shape, dtype=bool) if mask is None else ~np.asarray(mask, dtype=bool)
    level = clipped_mean(raw[keep]) if background is None else background
    # Negative residuals are kept: clipping them would bias the centroid to the frame centre.
    image = np.where(keep, raw - level, 0.0)
    total = float(image.sum())
    if total <= 0.0:
        return FrameStatistics(0.0, 0.0, float("nan"), float("nan"))
    rows = image.sum(axis=1)
    cols = image.sum(axis=0)
    return FrameStatistics(
        total=total,
        maximum=float(image.max()),
        centroid_row=float(np.dot(np.arange(rows.size), rows) / total),
        centroid_col=float(np.dot(np.arange(cols.size), cols) / total),
    )


def clipped_mean(values: np.ndarray, n_sigma: float = 3.0, iterations: int = 5) -> float:
    """Mean of ``values`` after iteratively discarding points above mean + n_sigma * std
    (the background level of an image with a bright compact feature)."""
    data = np.asarray(values, dtype=np.float64).ravel()
    keep = np.ones(data.size, dtype=bool)
    for _ in range(iterations):
        mean, std = data[keep].mean(), data[keep].std()
        new_keep = data <= mean + n_sigma * std
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return float(data[keep].mean())
