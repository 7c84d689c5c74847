"""Live SXDM analysis: streaming centre of mass per raster pixel, then strain and rotation maps.

For a ``technique="sxdm"`` run (`plans.sxdm.sxdm_rocking_raster`), every frame is fed to an
`analysis.sxdm.SxdmAccumulator` (four running sums per angle and raster pixel: memory set
by the raster, not by the number of frames), in batches of up to ``batch_frames`` frames
cut at the same seq_nums live and in replay (so both give bit-identical sums). Frame n
(seq_num n) is raster point unravel(n - 1, (n_theta, ny, nx)), the order the plan
records (``sxdm_raster.order``); in fly rasters the ``primary`` stream has no events,
each StreamDatum's seq_nums stand for its rows.

Every frame is checked first (`SxdmAccumulator.screen`): a bad frame (wrong shape, more
than a tenth of its pixels non-finite or saturated) is skipped, so its raster pixel at
that angle holds no intensity; masked pixels of a usable frame add nothing. A raster
pixel without intensity has NaN in every map.

Derived run streams:

* ``frame_quality`` (one row per frame skipped or with pixels masked; clean frames have
  none): ``raw_seq_num``, ``theta_index``, ``iy``, ``ix``, the
  `analysis.frame_quality.FrameQuality` record, ``used`` and the ``reason``;
* ``angles`` (one event per completed rocking angle): ``theta_index``, ``theta_deg``,
  ``intensity_angle`` (that angle's integrated intensity map), and the running maps of all
  frames so far without registration (``intensity``, ``dd_over_d``, ``theta_xy``,
  ``theta_xz``; NaN off the particle and until a particle shows);
* ``maps`` (one event at the end): after registration of the per-angle maps (drift),
  ``intensity``, ``dd_over_d``, ``theta_xy``, ``theta_xz`` (deg), ``d_A`` (NaN off the
  particle), ``signal`` (1 where the maps are defined: integrated intensity >=
  ``signal_threshold``, counts, `analysis.sxdm.signal_mask`), ``mask`` (1 in the particle
  mask of the statistics), references (``d_ref_A``, ``theta_xy_ref_deg``, ``theta_xz_ref_deg``) and the
  heterogeneity figures of merit ``sigma_dd_over_d``, ``sigma_theta_xy_deg``,
  ``sigma_theta_xz_deg`` (standard deviations over the mask);
* ``registration`` (one event per angle, at the end): ``theta_index``, ``theta_deg`` and
  the shift applied to that angle's maps, ``shift_row_px``, ``shift_col_px`` (raster
  pixels, in the frame of the brightest angle).

Live values for plans: ``angles_done``, ``sigma_strain`` (= sigma(dd/d)),
``sigma_theta_xy``, ``sigma_theta_xz`` (running, then final).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analysis.sxdm import SxdmAccumulator, SxdmMaps, signal_mask
from ..analysis.sxdm_geometry import SxdmGeometry
from ..schema.start import SXDM
from .derived import AnalysisCallback

MAP_NAMES = ("intensity", "dd_over_d", "theta_xy", "theta_xz")
"""The per-pixel maps published as the frames arrive and at the end."""


@dataclass(frozen=True)
class SxdmRaster:
    """What a raw SXDM run's start document says about its frames: the rocking angles
    (deg), the geometry, the raster (ny, nx), fly or step, and the accumulator settings
    (background counts per pixel, detector ROI). Frame n (seq_num n) is raster point
    unravel(n - 1, (n_theta, ny, nx)) (``sxdm_raster.order`` theta, y, x)."""

    thetas_deg: np.ndarray
    geometry: SxdmGeometry
    shape: tuple[int, int]
    fly: bool
    background: float
    roi: tuple[int, int, int, int] | None

    @classmethod
    def from_start(cls, start: dict[str, Any]) -> SxdmRaster:
        raster = start["sxdm_raster"]
        if list(raster.get("order", [])) != ["theta", "y", "x"]:
            raise ValueError(f"unsupported raster order {raster.get('order')!r} (expected theta, y, x)")
        roi = start["sxdm_roi"]
        return cls(
            thetas_deg=np.asarray(start["sxdm_thetas_deg"], dtype=np.float64),
            geometry=SxdmGeometry.from_metadata(start["sxdm_geometry"]),
            shape=(int(raster["shape"][0]), int(raster["shape"][1])),
            fly=raster.get("mode") == "fly",
            background=float(start["sxdm_background"]),
            roi=None if roi is None else tuple(roi),
        )

    def index(self, seq_num: int) -> tuple[int, int, int]:
        """(theta_index, iy, ix) of frame ``seq_num``; ValueError beyond the raster."""
        n_theta, (ny, nx) = self.thetas_deg.size, self.shape
        if not 1 <= seq_num <= n_theta * ny * nx:
            raise ValueError(f"frame {seq_num} is beyond the {n_theta} x {ny} x {nx} raster")
        t, iy, ix = np.unravel_index(seq_num - 1, (n_theta, ny, nx))
        return int(t), int(iy), int(ix)

    def accumulator(self, frame_shape: tuple[int, int], n_threads: int | None = None) -> SxdmAccumulator:
        """A fresh accumulator of this run's frames (per-angle sums: registration at the end)."""
        return SxdmAccumulator(self.geometry, self.thetas_deg, self.shape, tuple(frame_shape),
                               background=self.background, roi=self.roi, n_threads=n_threads)


def screen_frame(
    accumulator: SxdmAccumulator, raster: SxdmRaster, seq_num: int, frame: np.ndarray
) -> tuple[dict[str, Any] | None, tuple[int, int, int, np.ndarray] | None]:
    """Frame ``seq_num`` checked (`SxdmAccumulator.screen`): its ``frame_quality`` row (None
    for a clean frame) and the (theta_index, iy, ix, frame) item to add (None: skipped)."""
    t, iy, ix = raster.index(seq_num)
    quality, checked = accumulator.screen(frame)
    row = None
    if checked is None or quality.n_nonfinite or quality.n_saturated:
        row = {"raw_seq_num": seq_num, "theta_index": t, "iy": iy, "ix": ix,
               **quality.record(), "used": checked is not None, "reason": quality.reason}
    return row, None if checked is None else (t, iy, ix, checked)


class SxdmCallback(AnalysisCallback):
    """Streaming SXDM reduction; see the module docstring.

    Parameters
    ----------
    batch_frames: frames stacked per accumulator update (memory: batch_frames frames).
    registration: register the per-angle maps before the final sums (drift correction).
    mask_fraction: particle mask = integrated intensity >= this fraction of the maximum.
    d_ref_A: strain reference d (A); None: the median over the particle.
    """

    analysis = "sxdm_strain"
    techniques = (SXDM,)

    def __init__(
        self,
        batch_frames: int = 64,
        registration: bool = True,
        mask_fraction: float = 0.2,
        d_ref_A: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch_frames, self.registration = int(batch_frames), bool(registration)
        self.mask_fraction = float(mask_fraction)
        self.d_ref_A = None if d_ref_A is None else float(d_ref_A)
        self.live_signal("angles_done", int, 0)
        self.live_signal("sigma_strain", float, math.nan)
        self.live_signal("sigma_theta_xy", float, math.nan)
        self.live_signal("sigma_theta_xz", float, math.nan)
        self.maps: SxdmMaps | None = None

    def parameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments (JSON-able): ``SxdmCallback(**parameters())``
        rebuilds this analysis."""
        return {
            **super().parameters(),
            "batch_frames": self.batch_frames,
            "registration": self.registration,
            "mask_fraction": self.mask_fraction,
            "d_ref_A": self.d_ref_A,
        }

    def open_run(self, start: dict[str, Any]) -> None:
        self.raster = SxdmRaster.from_start(start)
        self.accumulator: SxdmAccumulator | None = None  # built at the first frame (its shape)
        self._batch: list[tuple[int, int, int, np.ndarray]] = []
        self.maps = None
        for name, value in (("angles_done", 0), ("sigma_strain", math.nan),
                            ("sigma_theta_xy", math.nan), ("sigma_theta_xz", math.nan)):
            self.set_live(name, value)

    def stream_datum(self, doc: dict[str, Any]) -> None:
        if self.raster.fly and self._streams.get(doc["descriptor"]) == self.stream:
            for seq_num in range(doc["seq_nums"]["start"], doc["seq_nums"]["stop"]):
                self._events.setdefault(seq_num, {})
        super().stream_datum(doc)

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        t, iy, ix = self.raster.index(seq_num)
        if self.accumulator is None:
            self.accumulator = self.raster.accumulator(self.frame_shape or np.shape(frame))
        row, item = screen_frame(self.accumulator, self.raster, seq_num, frame)
        if row is not None:
            self.derived.event("frame_quality", row)
        if item is not None:
            self._batch.append(item)
        angle_done = (iy, ix) == (self.raster.shape[0] - 1, self.raster.shape[1] - 1)
        if len(self._batch) >= self.batch_frames or angle_done:
            self._flush()
        if angle_done:
            self._publish_angle(t)

    def adopt(self, accumulator: SxdmAccumulator, quality_rows: list[dict[str, Any]], seq_nums: Iterable[int]) -> None:
        """Take the reduction of this run's frames made elsewhere (`accumulator`: e.g. partial
        states merged on a dask cluster, `nanostrain.analyze`; ``quality_rows``: the
        `screen_frame` rows of its frames; ``seq_nums``: the frames it covers) in place of
        `process_row`, between the raw run's start and stop: publishes what the frames would
        have, angle by angle (frame quality rows, then the running maps of the angles so
        far, for each angle whose last frame is among ``seq_nums``); the raw stop then
        publishes the final maps as live."""
        self.accumulator = accumulator
        last = {self.raster.index(seq)[0] for seq in seq_nums if self.raster.index(seq)[1:] ==
                (self.raster.shape[0] - 1, self.raster.shape[1] - 1)}
        rows = sorted(quality_rows, key=lambda row: row["raw_seq_num"])
        for t in range(self.raster.thetas_deg.size):
            for row in rows:
                if row["theta_index"] == t:
                    self.derived.event("frame_quality", row)
            if t in last:
                self._publish_angle(t, accumulator.first_angles(t + 1))

    def _flush(self) -> None:
        if self._batch:
            index = np.array([item[:3] for item in self._batch], dtype=np.intp)
            frames = np.stack([item[3] for item in self._batch])
            self.accumulator.add_many(index[:, 0], index[:, 1], index[:, 2], frames)
            self._batch = []

    def _maps(self, registration: bool, state: SxdmAccumulator | None = None) -> SxdmMaps | None:
        """Maps of the frames so far, or of ``state`` (None while no pixel holds a signal, `signal_mask`)."""
        state = self.accumulator if state is None else state
        if not signal_mask(state.intensity_by_angle.sum(axis=0))[0].any():
            return None
        return state.result(d_ref=self.d_ref_A, registration=registration, mask_fraction=self.mask_fraction)

    def _set_sigma(self, maps: SxdmMaps) -> None:
        self.set_live("sigma_strain", maps.sigma.dd_over_d)
        self.set_live("sigma_theta_xy", maps.sigma.theta_xy)
        self.set_live("sigma_theta_xz", maps.sigma.theta_xz)

    def _publish_angle(self, t: int, state: SxdmAccumulator | None = None) -> None:
        running = self._maps(registration=False, state=state)
        empty = np.full(self.raster.shape, np.nan)
        self.derived.event(
            "angles",
            {
                "theta_index": t,
                "theta_deg": float(self.raster.thetas_deg[t]),
                "intensity_angle": self.accumulator.intensity_by_angle[t],
                **{name: empty if running is None else getattr(running, name) for name in MAP_NAMES},
            },
        )
        self.set_live("angles_done", t + 1)
        if running is not None:
            self._set_sigma(running)

    def finish(self) -> None:
        if self.accumulator is None:
            raise ValueError("the sxdm run recorded no frames")
        self._flush()
        maps = self._maps(registration=self.registration)
        if maps is None:
            raise ValueError("no diffracted intensity in the sxdm run: nothing to map")
        self.maps = maps
        self.derived.event(
            "maps",
            {
                **{name: getattr(maps, name) for name in MAP_NAMES},
                "d_A": maps.d,
                "mask": maps.mask.astype(np.uint8),
                "signal": maps.signal.astype(np.uint8),
                "signal_threshold": maps.signal_threshold,
                "d_ref_A": maps.d_ref,
                "theta_xy_ref_deg": maps.theta_xy_ref,
                "theta_xz_ref_deg": maps.theta_xz_ref,
                "sigma_dd_over_d": maps.sigma.dd_over_d,
                "sigma_theta_xy_deg": maps.sigma.theta_xy,
                "sigma_theta_xz_deg": maps.sigma.theta_xz,
            },
        )
        for t, (row, col) in enumerate(maps.shifts_px):
            self.derived.event(
                "registration",
                {"theta_index": t, "theta_deg": float(self.raster.thetas_deg[t]), "shift_row_px": float(row), "shift_col_px": float(col)},
            )
        self._set_sigma(maps)
