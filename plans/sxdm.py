"""SXDM plans (SCIENCE.md section 3): find the particle, find its Bragg peak, rock and raster.

* `xrf_map`: a fluorescence raster that locates particles (counts-weighted centroid).
* `find_bragg_peak`: a rocking scan at one position, a Gaussian fit of the detector's
  total counts (`analysis.sxdm_alignment.fit_rocking_curve`), optionally moving the rotation to the peak.
* `sxdm_rocking_raster`: at each rocking angle a 2D raster of detector frames, the 5D
  dataset (angle, y, x, detector row, detector column) the live SXDM analysis reduces
  to strain and rotation maps.

Raster order: angles outermost, then rows (y), then x, every row in the same direction;
frame n (seq_num n, from 1) is (theta index, iy, ix) = unravel(n - 1, (n_theta, ny, nx)).
Two modes:

* ``step``: move, settle, one frame per point (``primary`` events: frame, positions,
  monitors);
* ``fly``: per row, the detector is prepared for nx frames of period exposure + deadtime
  and x crosses the row at step / period from half a step before the first point to half
  a step after the last, so frame k is centred on point k when the detector starts with
  the motion (real hardware: a motion controller's trigger; the simulated nanoprobe
  emulates exactly that, see `devices.nanoprobe`). Frames go to ``primary`` as
  StreamDatum only (no events: their index is their seq_num), row-end positions and
  monitors to the ``lines`` stream.

Every argument is checked (raster inside the scanner's travel and the rotation's range,
counts, the time budget) before the first message; the axes' own soft limits (and, in
fly mode, their maximum speed) are read and checked before anything moves. The start
document records ``technique="sxdm"``, ``image_key``, the detector geometry
(``sxdm_geometry``: `SxdmGeometry` fields), the angles (``sxdm_thetas_deg``), the
raster (``sxdm_raster``: shape, step, ranges, order, mode) and the analysis settings
(``sxdm_background``, ``sxdm_roi``), so replay needs nothing but the catalog.
Units: um (scanner), deg (angles), s.

Pauses and beam dumps (README "Beam dumps and pauses"): a checkpoint before every point
of the step raster, the rocking curve and the XRF map, and before every row of the fly
raster; a pause or suspension rewinds to it and retakes that point (or flies the row again).
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Movable, Readable, Triggerable
from bluesky.utils import MsgGenerator
from numpy.typing import NDArray
from ophyd_async.core import TriggerInfo

from ..analysis.sxdm_alignment import RockingCurveFit, XrfMap, fit_rocking_curve, xrf_centroid
from ..analysis.sxdm_geometry import SxdmGeometry
from ..devices.nanoprobe import ROCKING_TRAVEL_DEG, SCANNER_TRAVEL_UM
from ..schema.start import SXDM, SXDM_ROCKING_CURVE, XRF_MAP, start_metadata
from .metadata import plan_args
from .progress import report_progress
from .validation import (
    AREA_DETECTOR,
    LIMITED_AXIS,
    READABLE,
    DeviceRole,
    PlanArgumentError,
    check_axis_limits,
    require_bool,
    require_choice,
    require_count,
    require_device,
    require_finite,
    require_limits,
    require_metadata,
    require_numbers,
    require_optional_device,
    require_positive,
    require_range,
    require_span,
    require_within_limits,
)

__all__ = [
    "RasterPlan",
    "check_axis_limits",
    "estimate_duration_s",
    "find_bragg_peak",
    "plan_raster",
    "sxdm_rocking_raster",
    "xrf_map",
]

STEP_OVERHEAD_S = 0.05
"""Per point of a step raster: move, settle, detector readout (s; for the time budget)."""

LINE_OVERHEAD_S = 0.5
"""Per row of a fly raster: return, arm, start (s; for the time budget)."""

ANGLE_OVERHEAD_S = 1.0
"""Per rocking angle: rotate and settle (s; for the time budget)."""

DEFAULT_TIME_BUDGET_S = 8 * 3600.0
"""A beamline shift (s)."""

MAX_TIME_BUDGET_S = 7 * 24 * 3600.0
"""Largest time budget accepted (s): a week of beamtime."""

MAX_RASTER_POINTS = 4096
"""Largest raster side (points) accepted."""

MAX_RASTER_AREA = 1 << 20
"""Most points of one raster (ny x nx) accepted."""

MAX_ANGLES = 10_000
"""Most rocking angles accepted."""

STEP_UM_RANGE = (1e-3, 100.0)
"""Raster step accepted (um): 1 nm to the scanner's full travel."""

MAX_EXPOSURE_S = 60.0
"""Longest frame exposure (and deadtime) accepted (s)."""

MAX_BACKGROUND = 1e9
"""Largest background accepted (detector counts per pixel per frame)."""

MAX_DETECTOR_PIXELS = 1 << 16
"""Largest detector row or column index an roi may name."""

#: The nanoprobe's scanner: ``x`` and ``y`` axes with soft limits (`SCANNER_AXIS`).
SCANNER = DeviceRole("a scanner with x and y axes", (Readable,), children=("x", "y"))
#: An axis of the scanner (a fly row also sets and reads its speed).
SCANNER_AXIS = LIMITED_AXIS.requiring("velocity", "max_velocity")
#: An XRF counter: triggered, read, with a settable ``acquire_time`` and ``counts``.
XRF_COUNTER = DeviceRole("a fluorescence counter", (Readable, Triggerable), children=("counts", "acquire_time"))
#: The detector of a rocking scan: an area detector with a ``stats.total`` statistic.
ROCKING_DETECTOR = AREA_DETECTOR.requiring("stats.total")

MIN_RASTER_POINTS = 17
"""Fewest points of an SXDM raster: its maps are published as 2D arrays, which the catalog
writer stores as arrays only above 16 values (smaller ones go to table cells, 1D only)."""

# --------------------------------------------------------------------------------------
# Pure pieces: validation, time estimate
# --------------------------------------------------------------------------------------
def _axis_points(name: str, span: Sequence[float], step_um: float, limits_um: tuple[float, float]) -> NDArray[np.float64]:
    """Inclusive points start, start + step, ..., stop of a raster axis (stop - start must be
    a multiple of step; at most MAX_RASTER_POINTS points), inside the scanner's travel."""
    start, stop = require_span(name, span, "um")
    require_within_limits(name, [start, stop], limits_um, "um")
    intervals = abs(stop - start) / step_um
    if not intervals < MAX_RASTER_POINTS:  # also refuses an infinite span
        raise PlanArgumentError(f"{name} = {span!r}: more than {MAX_RASTER_POINTS} points of {step_um} um.")
    if abs(intervals - round(intervals)) > 1e-6:
        raise PlanArgumentError(f"{name} = {span!r}: stop - start must be a multiple of the step {step_um} um.")
    n = require_count(f"points along {name}", int(round(intervals)) + 1, 1, MAX_RASTER_POINTS)
    return start + np.sign(stop - start) * step_um * np.arange(n)


def _angles(name: str, values: Sequence[float], limits_deg: tuple[float, float]) -> NDArray[np.float64]:
    """Distinct, finite angles (deg; 1 to MAX_ANGLES of them) inside limits_deg."""
    angles = require_numbers(name, values, 1, MAX_ANGLES, "deg")
    if np.unique(angles).size != angles.size:
        raise PlanArgumentError(f"{name} must not repeat an angle.")
    require_within_limits(name, list(angles), limits_deg, "deg")
    return angles


def _raster_axes(
    x: Sequence[float], y: Sequence[float], step: float, limits_um: tuple[float, float]
) -> tuple[NDArray[np.float64], NDArray[np.float64], float, tuple[float, float]]:
    """The checked raster: x and y points (um), the step (um, in STEP_UM_RANGE) and the
    limits (um); at most MAX_RASTER_AREA points."""
    step = require_range("step", step, *STEP_UM_RANGE, unit="um")
    limits_um = require_limits("limits_um", limits_um, "um")
    xs, ys = _axis_points("x", x, step, limits_um), _axis_points("y", y, step, limits_um)
    if xs.size * ys.size > MAX_RASTER_AREA:
        raise PlanArgumentError(f"x, y: a {ys.size} x {xs.size} raster exceeds {MAX_RASTER_AREA} points.")
    return xs, ys, step, limits_um


def _within_budget(duration_s: float, max_time_s: float, what: str) -> None:
    if duration_s > max_time_s:
        raise PlanArgumentError(
            f"{what} would take about {duration_s / 3600:.2f} h, more than max_time_s = {max_time_s / 3600:.2f} h."
        )


def estimate_duration_s(
    n_theta: int, ny: int, nx: int, exposure_s: float, deadtime_s: float, mode: Literal["step", "fly"]
) -> float:
    """Expected wall time of a rocking raster on the real instrument (s).

    step: n_theta (ANGLE_OVERHEAD + ny nx (exposure + deadtime + STEP_OVERHEAD));
    fly: n_theta (ANGLE_OVERHEAD + ny (nx (exposure + deadtime) + LINE_OVERHEAD)).
    """
    frame = exposure_s + deadtime_s
    per_row = nx * (frame + STEP_OVERHEAD_S) if mode == "step" else nx * frame + LINE_OVERHEAD_S
    return n_theta * (ANGLE_OVERHEAD_S + ny * per_row)


@dataclass(frozen=True)
class RasterPlan:
    """A validated rocking raster: angles (deg), y and x points (um), step (um), mode,
    exposure and deadtime (s), and the estimated duration (s)."""

    thetas_deg: NDArray[np.float64]
    ys_um: NDArray[np.float64]
    xs_um: NDArray[np.float64]
    step_um: float
    mode: Literal["step", "fly"]
    exposure_s: float
    deadtime_s: float
    duration_s: float

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_theta, ny, nx)."""
        return self.thetas_deg.size, self.ys_um.size, self.xs_um.size

    @property
    def fly_speed(self) -> float:
        """x speed of a fly row, step / (exposure + deadtime) (um/s)."""
        return self.step_um / (self.exposure_s + self.deadtime_s)

    @property
    def x_span_um(self) -> tuple[float, float]:
        """Where x goes in a row: first to last point, in fly mode from half a step before
        the first to half a step after the last."""
        if self.mode == "step":
            return float(self.xs_um[0]), float(self.xs_um[-1])
        run_up = self.step_um / 2.0 * np.sign(self.xs_um[-1] - self.xs_um[0])
        return float(self.xs_um[0] - run_up), float(self.xs_um[-1] + run_up)


def plan_raster(
    x: Sequence[float],
    y: Sequence[float],
    step: float,
    thetas: Sequence[float],
    mode: str = "step",
    exposure_s: float = 0.01,
    deadtime_s: float = 0.0,
    limits_um: tuple[float, float] = SCANNER_TRAVEL_UM,
    limits_deg: tuple[float, float] = ROCKING_TRAVEL_DEG,
    max_time_s: float = DEFAULT_TIME_BUDGET_S,
) -> RasterPlan:
    """Check a rocking raster's arguments (see `sxdm_rocking_raster`); raise
    `PlanArgumentError` naming the first bad one."""
    mode = require_choice("mode", mode, ("step", "fly"))
    exposure_s = require_positive("exposure_s", exposure_s, MAX_EXPOSURE_S, "s")
    deadtime_s = require_range("deadtime_s", deadtime_s, 0.0, MAX_EXPOSURE_S, "s")
    max_time_s = require_positive("max_time_s", max_time_s, MAX_TIME_BUDGET_S, "s")
    xs, ys, step, limits_um = _raster_axes(x, y, step, limits_um)
    if mode == "fly" and xs.size < 2:
        raise PlanArgumentError("a fly raster needs at least 2 points per row.")
    if xs.size * ys.size < MIN_RASTER_POINTS:
        raise PlanArgumentError(
            f"an SXDM raster needs at least {MIN_RASTER_POINTS} points, got {ys.size} x {xs.size}."
        )
    angles = _angles("thetas", thetas, require_limits("limits_deg", limits_deg, "deg"))
    duration = estimate_duration_s(angles.size, ys.size, xs.size, exposure_s, deadtime_s, mode)
    raster = RasterPlan(angles, ys, xs, step, mode, exposure_s, float(deadtime_s), duration)
    require_within_limits("x", list(raster.x_span_um), limits_um, "um")
    _within_budget(duration, max_time_s, f"the raster ({angles.size} angles x {ys.size} x {xs.size} points, {mode})")
    return raster


# --------------------------------------------------------------------------------------
# Plan stubs
# --------------------------------------------------------------------------------------
def _geometry_md(detector, geometry: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``sxdm_geometry`` record of the given geometry (an `SxdmGeometry.to_metadata`
    dict, checked by rebuilding the `SxdmGeometry`), else of the detector's."""
    if geometry is None:
        if not hasattr(detector, "sxdm_geometry"):
            raise PlanArgumentError(
                f"detector {detector.name!r} has no sxdm_geometry: pass geometry=SxdmGeometry(...).to_metadata() "
                "or use an SXDM detector."
            )
        return detector.sxdm_geometry().to_metadata()
    if not isinstance(geometry, Mapping):
        raise PlanArgumentError(f"geometry must be an SxdmGeometry.to_metadata() dict, got {type(geometry).__name__}.")
    try:
        return SxdmGeometry.from_metadata(geometry).to_metadata()
    except (KeyError, TypeError, ValueError) as error:
        raise PlanArgumentError(f"geometry {dict(geometry)!r} is not an SxdmGeometry record: {error!r}") from None


def _check_roi(roi: Sequence[int] | None) -> list[int] | None:
    """(row_start, row_stop, col_start, col_stop): integers, starts below stops, at most
    MAX_DETECTOR_PIXELS."""
    if roi is None:
        return None
    if isinstance(roi, str | bytes) or not isinstance(roi, Sequence | np.ndarray) or len(roi) != 4:
        raise PlanArgumentError(f"roi must be (row_start, row_stop, col_start, col_stop), got {roi!r}.")
    r0, r1, c0, c1 = (require_count(f"roi[{i}]", v, 0, MAX_DETECTOR_PIXELS) for i, v in enumerate(roi))
    if not (r0 < r1 and c0 < c1):
        raise PlanArgumentError(f"roi must have row_start < row_stop and col_start < col_stop, got {roi!r}.")
    return [r0, r1, c0, c1]


def _scanner(stage: Any) -> None:
    """``stage`` is a scanner whose x and y are axes with soft limits and a speed."""
    require_device("stage", stage, SCANNER)
    require_device("stage.x", stage.x, SCANNER_AXIS)
    require_device("stage.y", stage.y, SCANNER_AXIS)


def sxdm_rocking_raster(
    detector: Readable,
    stage: Readable,
    theta: Movable,
    x: Sequence[float],
    y: Sequence[float],
    step: float,
    thetas: Sequence[float],
    mode: Literal["step", "fly"] = "step",
    *,
    exposure_s: float = 0.01,
    deadtime_s: float = 0.0,
    geometry: dict[str, Any] | None = None,
    monitor: Readable | None = None,
    xrf: Readable | None = None,
    background: float = 0.0,
    roi: Sequence[int] | None = None,
    limits_um: tuple[float, float] = SCANNER_TRAVEL_UM,
    limits_deg: tuple[float, float] = ROCKING_TRAVEL_DEG,
    max_time_s: float = DEFAULT_TIME_BUDGET_S,
    progress: bool = True,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """SXDM: a 2D raster of detector frames at each rocking angle (module docstring).

    detector: pixel-array detector (`MerlinPixelDetector`, `EigerPixelDetector` or the
    simulated `SimPixelDetector`); stage: scanner with ``x`` and ``y`` axes (um); theta:
    rocking rotation (deg). x, y: (start, stop) raster ranges (um, inclusive; stop - start
    a multiple of step); step: raster step (um, e.g. 0.05); thetas: rocking angles (deg,
    e.g. theta_B + linspace(-1, 1, 41)); mode: "step" or "fly". exposure_s, deadtime_s:
    frame exposure and gap (s). geometry: an `SxdmGeometry.to_metadata` dict (default the
    detector's ``sxdm_geometry()``). monitor, xrf: readables recorded with each point (step) or row
    (fly). background: detector counts per pixel per frame for the analysis to subtract;
    roi: detector rows/cols (row_start, row_stop, col_start, col_stop) to analyse.
    limits_um, limits_deg: travel the raster and angles must stay in; max_time_s: time
    budget (see `estimate_duration_s`). progress: a line per angle
    (`plans.progress.report_progress`; False: quiet). The start document records
    ``sample`` and ``plan_args``. Returns the run uid.

    Limits (PlanArgumentError naming the argument, before the first message): step in
    STEP_UM_RANGE um; at most MAX_RASTER_POINTS per side and MAX_RASTER_AREA per raster
    (at least MIN_RASTER_POINTS); 1 to MAX_ANGLES distinct thetas inside limits_deg;
    exposure_s in (0, MAX_EXPOSURE_S] s, deadtime_s in [0, MAX_EXPOSURE_S] s; max_time_s
    in (0, MAX_TIME_BUDGET_S] s; background in [0, MAX_BACKGROUND]; roi integers up to
    MAX_DETECTOR_PIXELS; limits finite with low < high; every number finite; detector an
    area detector, stage a scanner (x, y axes with soft limits), theta an axis with soft
    limits, monitor and xrf readable. Then, as the first messages (reads only, before
    anything moves or the run opens): the axes' own soft limits and, in fly mode, x's
    maximum speed.
    """
    arguments = plan_args(locals())
    require_device("detector", detector, AREA_DETECTOR)
    _scanner(stage)
    require_device("theta", theta, LIMITED_AXIS)
    require_optional_device("monitor", monitor, READABLE)
    require_optional_device("xrf", xrf, READABLE)
    raster = plan_raster(x, y, step, thetas, mode, exposure_s, deadtime_s, limits_um, limits_deg, max_time_s)
    geometry_md = _geometry_md(detector, geometry)
    roi = _check_roi(roi)
    background = require_range("background", background, 0.0, MAX_BACKGROUND, "counts")
    progress = require_bool("progress", progress)
    require_metadata(sample, md)
    n_theta, ny, nx = raster.shape
    extras = [device for device in (monitor, xrf) if device is not None]
    metadata = start_metadata(
        SXDM,
        "sxdm_rocking_raster",
        md,
        image_key=detector.name,
        sxdm_geometry=geometry_md,
        sxdm_thetas_deg=raster.thetas_deg.tolist(),
        sxdm_raster={
            "shape": [ny, nx],
            "step_um": raster.step_um,
            "x_um": [float(raster.xs_um[0]), float(raster.xs_um[-1])],
            "y_um": [float(raster.ys_um[0]), float(raster.ys_um[-1])],
            "order": ["theta", "y", "x"],
            "mode": raster.mode,
        },
        sxdm_background=background,
        sxdm_roi=roi,
        exposure_s=raster.exposure_s,
        deadtime_s=raster.deadtime_s,
        num_points=n_theta * ny * nx,
        estimated_duration_s=raster.duration_s,
        motors=[stage.x.name, stage.y.name, theta.name],
        plan_args=arguments,
        **({"sample": sample} if sample else {}),
    )
    x_span = raster.x_span_um
    started = time.monotonic()

    def report(t: int) -> None:
        if not progress:
            return
        done = (t + 1) / n_theta
        elapsed = time.monotonic() - started
        report_progress(
            f"sxdm: angle {t + 1}/{n_theta} (theta = {raster.thetas_deg[t]:.4f} deg), "
            f"{(t + 1) * ny * nx}/{n_theta * ny * nx} frames, {elapsed:.0f} s, ~{elapsed * (1 / done - 1):.0f} s left"
        )

    def step_rows():
        readers = [detector, stage.x, stage.y, theta, *extras]
        yield from bps.prepare(detector, TriggerInfo(livetime=raster.exposure_s, deadtime=raster.deadtime_s), wait=True)
        for t, angle in enumerate(raster.thetas_deg):
            yield from bps.mv(theta, angle)
            for y_um in raster.ys_um:
                yield from bps.mv(stage.y, y_um)
                for x_um in raster.xs_um:
                    yield from bps.checkpoint()  # a pause lands between frames; a rewind retakes one
                    yield from bps.mv(stage.x, x_um)
                    yield from bps.trigger_and_read(readers)
            report(t)

    def fly_rows():
        line = TriggerInfo(number_of_events=nx, livetime=raster.exposure_s, deadtime=raster.deadtime_s)
        move_speed = yield from bps.rd(stage.x.velocity)
        yield from bps.prepare(detector, line, wait=True)
        yield from bps.declare_stream(detector, name="primary", collect=True)
        yield from bpp.finalize_wrapper(rows(line, move_speed), lambda: bps.mv(stage.x.velocity, move_speed))

    def rows(line: TriggerInfo, move_speed: float):
        for t, angle in enumerate(raster.thetas_deg):
            yield from bps.mv(theta, angle)
            for y_um in raster.ys_um:
                yield from bps.checkpoint()  # a pause lands between rows; a rewind flies the row again
                yield from bps.mv(stage.y, y_um, stage.x, x_span[0])
                yield from bps.mv(stage.x.velocity, raster.fly_speed)
                yield from bps.prepare(detector, line, wait=True)
                yield from bps.abs_set(stage.x, x_span[1], group="row")
                yield from bps.kickoff(detector, wait=True)
                yield from bps.complete(detector, group="row")
                yield from bps.wait(group="row")
                yield from bps.collect(detector, name="primary")
                yield from bps.mv(stage.x.velocity, move_speed)
                yield from bps.trigger_and_read([stage.x, stage.y, theta, *extras], name="lines")
            report(t)

    @bpp.stage_decorator([detector])
    @bpp.run_decorator(md=metadata)
    def inner():
        yield from (step_rows() if mode == "step" else fly_rows())

    yield from check_axis_limits(
        [(stage.x, min(x_span), max(x_span)), (stage.y, raster.ys_um.min(), raster.ys_um.max()),
         (theta, raster.thetas_deg.min(), raster.thetas_deg.max())],
        [(stage.x, raster.fly_speed)] if mode == "fly" else [],
    )
    return (yield from inner())


def find_bragg_peak(
    detector: Readable,
    theta: Movable,
    thetas: Sequence[float],
    *,
    exposure_s: float = 0.05,
    move: bool = True,
    monitor: Readable | None = None,
    limits_deg: tuple[float, float] = ROCKING_TRAVEL_DEG,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[RockingCurveFit]:
    """Rocking scan: one frame per angle of ``thetas`` (deg) at the current position (stream
    ``primary``), the detector's total counts (``detector.stats.total``, stream ``stats``)
    fitted by `analysis.sxdm_alignment.fit_rocking_curve`; with
    ``move`` the rotation goes to the fitted centre. Records ``technique="sxdm_rocking_curve"``.
    Returns the `analysis.sxdm_alignment.RockingCurveFit` (raises ValueError, without moving, if no peak is found).
    The start document records ``sample`` and ``plan_args``. Checked before the first
    message: detector an area detector with ``stats.total``, theta an axis with soft
    limits, 4 to MAX_ANGLES distinct finite thetas inside limits_deg, exposure_s in
    (0, MAX_EXPOSURE_S] s, move a bool; theta's own soft limits are read first.
    """
    arguments = plan_args(locals())
    require_device("detector", detector, ROCKING_DETECTOR)
    require_device("theta", theta, LIMITED_AXIS)
    require_optional_device("monitor", monitor, READABLE)
    angles = _angles("thetas", thetas, require_limits("limits_deg", limits_deg, "deg")).tolist()
    if len(angles) < 4:
        raise PlanArgumentError(f"a rocking scan needs >= 4 angles, got {len(angles)}.")
    require_positive("exposure_s", exposure_s, MAX_EXPOSURE_S, "s")
    move = require_bool("move", move)
    require_metadata(sample, md)
    metadata = start_metadata(
        SXDM_ROCKING_CURVE,
        "find_bragg_peak",
        md,
        image_key=detector.name,
        exposure_s=exposure_s,
        motors=[theta.name],
        plan_args=arguments,
        **({"sample": sample} if sample else {}),
    )
    counts: list[float] = []
    readers = [detector, theta] + ([monitor] if monitor is not None else [])

    @bpp.stage_decorator([detector])
    @bpp.run_decorator(md=metadata)
    def inner():
        yield from bps.prepare(detector, TriggerInfo(livetime=exposure_s), wait=True)
        for angle in angles:
            yield from bps.checkpoint()
            yield from bps.mv(theta, angle)
            yield from bps.trigger_and_read(readers)
            reading = yield from bps.trigger_and_read([detector.stats.total], name="stats")
            counts.append(float(reading[detector.stats.total.name]["value"]))

    yield from check_axis_limits([(theta, min(angles), max(angles))])
    yield from inner()
    fit = fit_rocking_curve(angles, counts)
    if move:
        yield from bps.mv(theta, fit.centre_deg)
    return fit


def xrf_map(
    xrf: Readable,
    stage: Readable,
    x: Sequence[float],
    y: Sequence[float],
    step: float,
    *,
    exposure_s: float = 0.01,
    monitor: Readable | None = None,
    threshold: float = 0.5,
    move_to_particle: bool = False,
    limits_um: tuple[float, float] = SCANNER_TRAVEL_UM,
    max_time_s: float = DEFAULT_TIME_BUDGET_S,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[XrfMap]:
    """Fluorescence step raster over x, y = (start, stop) (um) with ``step`` (um), counting
    ``exposure_s`` s per point with ``xrf`` (``counts``, ``acquire_time``); the particle is
    the counts-weighted centroid of the pixels above ``threshold`` (`analysis.sxdm_alignment.xrf_centroid`), where
    the stage goes with ``move_to_particle``. Records ``technique="xrf_map"``, ``sample`` and
    ``plan_args``. Returns an `XrfMap`. Checked before the first message as
    `sxdm_rocking_raster` (xrf a fluorescence counter; step, raster size, exposure_s,
    max_time_s, limits_um); threshold in (0, 1); the axes' soft limits are read first.
    """
    arguments = plan_args(locals())
    require_device("xrf", xrf, XRF_COUNTER)
    _scanner(stage)
    require_optional_device("monitor", monitor, READABLE)
    if not 0 < require_finite("threshold", threshold) < 1:
        raise PlanArgumentError(f"threshold must be in (0, 1), got {threshold!r}.")
    exposure_s = require_positive("exposure_s", exposure_s, MAX_EXPOSURE_S, "s")
    max_time_s = require_positive("max_time_s", max_time_s, MAX_TIME_BUDGET_S, "s")
    move_to_particle = require_bool("move_to_particle", move_to_particle)
    require_metadata(sample, md)
    xs, ys, step, limits_um = _raster_axes(x, y, step, limits_um)
    _within_budget(ys.size * xs.size * (exposure_s + STEP_OVERHEAD_S), max_time_s, f"the {ys.size} x {xs.size} map")
    metadata = start_metadata(
        XRF_MAP,
        "xrf_map",
        md,
        xrf_raster={"shape": [ys.size, xs.size], "step_um": step, "x_um": [float(xs[0]), float(xs[-1])],
                    "y_um": [float(ys[0]), float(ys[-1])], "order": ["y", "x"]},
        exposure_s=exposure_s,
        motors=[stage.x.name, stage.y.name],
        plan_args=arguments,
        **({"sample": sample} if sample else {}),
    )
    counts = np.zeros((ys.size, xs.size))
    readers = [xrf, stage.x, stage.y] + ([monitor] if monitor is not None else [])

    @bpp.run_decorator(md=metadata)
    def inner():
        yield from bps.mv(xrf.acquire_time, exposure_s)
        for iy, y_um in enumerate(ys):
            yield from bps.mv(stage.y, y_um)
            for ix, x_um in enumerate(xs):
                yield from bps.checkpoint()
                yield from bps.mv(stage.x, x_um)
                reading = yield from bps.trigger_and_read(readers)
                counts[iy, ix] = reading[xrf.counts.name]["value"]

    yield from check_axis_limits([(stage.x, xs.min(), xs.max()), (stage.y, ys.min(), ys.max())])
    yield from inner()
    result = XrfMap(ys, xs, counts, xrf_centroid(ys, xs, counts, threshold))
    if move_to_particle:
        yield from bps.mv(stage.y, result.centroid_um[0], stage.x, result.centroid_um[1])
    return result
