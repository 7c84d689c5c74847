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


def frame_statistics(frame: np.ndarray, background: float | None = None) -> FrameStatistics:
    """Total, maximum and centroid of ``frame - background`` (negative values clipped).

    centroid_row = sum_i sum_j i * I_ij / sum I, centroid_col likewise with j.
    background: counts per pixel to subtract; None takes the frame's median, a robust
    estimate when the feature (beam spot, peak) covers under half of the frame.
    """
    raw = np.asarray(frame, dtype=np.float64)
    if raw.ndim != 2:
        raise ValueError(f"frame must be 2D, got shape {raw.shape}")
    level = float(np.median(raw)) if background is None else background
    image = np.clip(raw - level, 0.0, None)
    total = float(image.sum())
    if total == 0.0:
        return FrameStatistics(0.0, 0.0, float("nan"), float("nan"))
    rows = image.sum(axis=1)
    cols = image.sum(axis=0)
    return FrameStatistics(
        total=total,
        maximum=float(image.max()),
        centroid_row=float(np.dot(np.arange(rows.size), rows) / total),
        centroid_col=float(np.dot(np.arange(cols.size), cols) / total),
    )
