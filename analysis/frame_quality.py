"""Per-frame quality of detector images: what may be reduced, what is masked, and why not.

`assess_frame` looks at one frame before any reduction:

* wrong shape (not the detector's) or not numbers: the frame is **bad**, it is skipped;
* non-finite pixels (NaN, inf), saturated pixels (at or above the detector's
  ``saturation`` count; for integer frames by default the top of the counter) and dead
  pixels (a given mask) are **masked**; if more than ``max_masked_fraction`` of the
  frame is masked the frame is **bad**;
* a frame whose unmasked pixels carry no signal (all equal, or none above 0 counts) has
  **no signal**: a reduction reports NaN for it, with the reason, never a fit.

The result is a frozen `FrameQuality` (its ``record()`` is a row a derived run can
publish) and the mask (True = excluded) to reduce the frame with. Reductions that cannot
take a mask (a tomographic reconstruction, a matrix product over all pixels) fill the
masked pixels instead: `fill_nearest` gives each the value of its nearest unmasked pixel
(the dead-pixel correction tomography codes apply), or the reduction sets them to a level
that contributes nothing (SXDM: the background).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.ndimage

__all__ = ["BAD", "MAX_MASKED_FRACTION", "NO_SIGNAL", "OK", "FrameQuality", "assess_frame", "fill_nearest"]

#: Statuses of a frame: reduce it; report NaN for it (nothing to fit); skip it.
OK, NO_SIGNAL, BAD = "ok", "no_signal", "bad"
#: Largest fraction of a frame that may be masked (non-finite, saturated, dead) for the
#: rest of it to be reduced.
MAX_MASKED_FRACTION = 0.1


@dataclass(frozen=True)
class FrameQuality:
    """The quality of one frame (module docstring): ``status`` (OK, NO_SIGNAL or BAD),
    ``reason`` (empty when OK), and the pixels masked: ``n_nonfinite``, ``n_saturated``,
    ``n_dead`` (counts of pixels; a pixel in several classes counts in each)."""

    status: str
    reason: str = ""
    n_nonfinite: int = 0
    n_saturated: int = 0
    n_dead: int = 0

    @property
    def usable(self) -> bool:
        """The frame has the detector's shape and few enough masked pixels (OK or NO_SIGNAL)."""
        return self.status != BAD

    def record(self) -> dict[str, str | int]:
        """The fields as a derived-run row (``quality_status``, ``quality_reason``, ``n_*``)."""
        fields = asdict(self)
        return {"quality_status": fields.pop("status"), "quality_reason": fields.pop("reason"), **fields}


def _default_saturation(dtype: np.dtype) -> float | None:
    """The top of an integer detector's counter; None (no saturation known) for floats."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else None


def assess_frame(
    frame: np.ndarray,
    shape: tuple[int, int],
    *,
    dead_mask: np.ndarray | None = None,
    saturation: float | None = None,
    max_masked_fraction: float = MAX_MASKED_FRACTION,
) -> tuple[FrameQuality, np.ndarray | None]:
    """The quality of ``frame`` (counts) on a detector of ``shape`` (rows, cols), and the
    mask (bool, ``shape``, True = excluded) to reduce it with; the mask is None for a BAD frame.

    dead_mask: bool array of ``shape``, True = dead pixel. saturation: counts at or above
    which a pixel is saturated (default: the top of an integer frame's counter, none for
    floats). max_masked_fraction: the most of the frame that may be masked.
    """
    array = np.asarray(frame)
    if array.shape != tuple(shape):
        return FrameQuality(BAD, f"wrong shape {array.shape}, the detector is {tuple(shape)}"), None
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        return FrameQuality(BAD, f"pixels of type {array.dtype} are not counts"), None
    nonfinite = ~np.isfinite(array)
    level = _default_saturation(array.dtype) if saturation is None else saturation
    with np.errstate(invalid="ignore"):
        saturated = ~nonfinite & (array >= level) if level is not None else np.zeros(array.shape, dtype=bool)
    dead = np.zeros(array.shape, dtype=bool) if dead_mask is None else np.asarray(dead_mask, dtype=bool)
    mask = nonfinite | saturated | dead
    counts = {"n_nonfinite": int(nonfinite.sum()), "n_saturated": int(saturated.sum()), "n_dead": int(dead.sum())}
    fraction = float(mask.mean())
    if fraction > max_masked_fraction:
        reason = (f"{fraction:.1%} of the pixels masked ({counts['n_nonfinite']} non-finite, "
                  f"{counts['n_saturated']} saturated, {counts['n_dead']} dead), more than {max_masked_fraction:.1%}")
        return FrameQuality(BAD, reason, **counts), None
    values = array[~mask]
    if values.size == 0 or values.max() <= 0 or values.max() == values.min():
        low, high = (values.min(), values.max()) if values.size else (np.nan, np.nan)
        reason = f"no signal: the {values.size} unmasked pixels read {low:g} to {high:g} counts"
        return FrameQuality(NO_SIGNAL, reason, **counts), mask
    return FrameQuality(OK, "", **counts), mask


def fill_nearest(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A float32 copy of ``frame`` (rows, cols) whose masked pixels (``mask`` True) take the
    value of the nearest unmasked pixel (Euclidean distance, `scipy.ndimage.distance_transform_edt`).

    For reductions that need every pixel (normalisation and reconstruction of TXM
    projections). A frame without any unmasked pixel is refused (ValueError): there is
    nothing to fill from.
    """
    frame = np.asarray(frame, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != frame.shape:
        raise ValueError(f"mask shape {mask.shape} != frame shape {frame.shape}")
    if not mask.any():
        return frame.copy()
    if mask.all():
        raise ValueError("every pixel of the frame is masked: nothing to fill from")
    nearest = scipy.ndimage.distance_transform_edt(mask, return_distances=False, return_indices=True)
    return frame[tuple(nearest)]
