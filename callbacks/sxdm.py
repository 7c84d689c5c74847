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
  ``theta_xz``; NaN until a particle shows);
* ``maps`` (one event at the end): after registration of the per-angle maps (drift),
  ``intensity``, ``dd_over_d``, ``theta_xy``, ``theta_xz`` (deg), ``d_A``, ``mask`` (1 in the
  particle), references (``d_ref_A``, ``theta_xy_ref_deg``, ``theta_xz_ref_deg``) and the
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
from typing import Any

import numpy as np

from ..analysis.sxdm import SxdmAccumulator, SxdmMaps
from ..analysis.sxdm_geometry import SxdmGeometry
from ..schema.start import SXDM
from .derived import AnalysisCallback

MAP_NAMES = ("intensity", "dd_over_d", "theta_xy", "theta_xz")
"""The per-pixel maps published as the frames arrive and at the end."""


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
        raster = start["sxdm_raster"]
        if list(raster.get("order", [])) != ["theta", "y", "x"]:
            raise ValueError(f"unsupported raster order {raster.get('order')!r} (expected theta, y, x)")
        self.thetas = np.asarray(start["sxdm_thetas_deg"], dtype=np.float64)
        self.geometry = SxdmGeometry.from_metadata(start["sxdm_geometry"])
        self.raster_shape = (int(raster["shape"][0]), int(raster["shape"][1]))
        self.fly = raster.get("mode") == "fly"
        roi = start["sxdm_roi"]
        self.accumulator_settings = {
            "background": float(start["sxdm_background"]),
            "roi": None if roi is None else tuple(roi),
        }
        self.accumulator: SxdmAccumulator | None = None  # built at the first frame (its shape)
        self._batch: list[tuple[int, int, int, np.ndarray]] = []
        self.maps = None
        for name, value in (("angles_done", 0), ("sigma_strain", math.nan),
                            ("sigma_theta_xy", math.nan), ("sigma_theta_xz", math.nan)):
            self.set_live(name, value)

    def stream_datum(self, doc: dict[str, Any]) -> None:
        if self.fly and self._streams.get(doc["descriptor"]) == self.stream:
            for seq_num in range(doc["seq_nums"]["start"], doc["seq_nums"]["stop"]):
                self._events.setdefault(seq_num, {})
        super().stream_datum(doc)

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        n_theta, (ny, nx) = self.thetas.size, self.raster_shape
        if not 1 <= seq_num <= n_theta * ny * nx:
            raise ValueError(f"frame {seq_num} is beyond the {n_theta} x {ny} x {nx} raster")
        t, iy, ix = np.unravel_index(seq_num - 1, (n_theta, ny, nx))
        if self.accumulator is None:
            self.accumulator = SxdmAccumulator(
                self.geometry, self.thetas, self.raster_shape, self.frame_shape or np.shape(frame),
                **self.accumulator_settings,
            )
        quality, checked = self.accumulator.screen(frame)
        if checked is None or quality.n_nonfinite or quality.n_saturated:
            self.derived.event("frame_quality", {
                "raw_seq_num": seq_num, "theta_index": int(t), "iy": int(iy), "ix": int(ix),
                **quality.record(), "used": checked is not None, "reason": quality.reason,
            })
        if checked is not None:
            self._batch.append((int(t), int(iy), int(ix), checked))
        angle_done = iy == ny - 1 and ix == nx - 1
        if len(self._batch) >= self.batch_frames or angle_done:
            self._flush()
        if angle_done:
            self._publish_angle(int(t))

    def _flush(self) -> None:
        if self._batch:
            index = np.array([item[:3] for item in self._batch], dtype=np.intp)
            frames = np.stack([item[3] for item in self._batch])
            self.accumulator.add_many(index[:, 0], index[:, 1], index[:, 2], frames)
            self._batch = []

    def _maps(self, registration: bool) -> SxdmMaps | None:
        """Maps of the frames so far (None while no pixel holds positive intensity)."""
        intensity = self.accumulator.intensity_by_angle.sum(axis=0)
        if not np.max(intensity) > 0:
            return None
        return self.accumulator.result(
            d_ref=self.d_ref_A, registration=registration, mask_fraction=self.mask_fraction
        )

    def _set_sigma(self, maps: SxdmMaps) -> None:
        self.set_live("sigma_strain", maps.sigma.dd_over_d)
        self.set_live("sigma_theta_xy", maps.sigma.theta_xy)
        self.set_live("sigma_theta_xz", maps.sigma.theta_xz)

    def _publish_angle(self, t: int) -> None:
        running = self._maps(registration=False)
        empty = np.full(self.raster_shape, np.nan)
        self.derived.event(
            "angles",
            {
                "theta_index": t,
                "theta_deg": float(self.thetas[t]),
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
                {"theta_index": t, "theta_deg": float(self.thetas[t]), "shift_row_px": float(row), "shift_col_px": float(col)},
            )
        self._set_sigma(maps)
