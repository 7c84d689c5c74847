"""Alignment: scan a stage while a camera images the beam (or a particle).

Pauses and beam dumps: `bluesky.plans.scan`'s checkpoint before every point; a pause or
suspension rewinds to it and retakes that point (README "Beam dumps and pauses").
"""

from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
from bluesky.protocols import Movable, Readable
from bluesky.utils import MsgGenerator

from ..schema.start import ALIGNMENT, start_metadata
from .metadata import plan_args
from .validation import (
    AREA_DETECTOR,
    POSITIONER,
    READABLE,
    check_axis_limits,
    has_soft_limits,
    require_count,
    require_device,
    require_limits,
    require_metadata,
    require_optional_device,
    require_positive,
    require_range,
)

#: Most points of an alignment scan.
MAX_POINTS = 100_000
#: Longest camera exposure, s.
MAX_EXPOSURE_S = 60.0


def alignment_scan(
    cam: Readable,
    stage: Movable,
    start_mm: float,
    stop_mm: float,
    num: int,
    *,
    monitor: Readable | None = None,
    exposure_s: float = 0.1,
    limits_mm: tuple[float, float] = (-10.0, 10.0),
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Step ``stage`` from ``start_mm`` to ``stop_mm`` in ``num`` points, one ``cam``
    frame (``exposure_s`` seconds) and one ``monitor`` reading per point.

    The run's start document follows the alignment contract of `nanostrain.schema.start`
    (``technique="alignment"``, ``plan_name="alignment_scan"``, ``image_key``: the camera's
    frame data key, which the live frame-statistics analysis uses); ``md`` may add keys,
    not replace those; ``sample`` (metadata of what is imaged) and ``plan_args`` are
    recorded too. Returns the run uid.
    Raises PlanArgumentError before anything moves (and before any message) if ``cam``
    is not an area detector, ``stage`` not a positioner, ``monitor`` not readable, a
    position (mm) is not finite or outside ``limits_mm`` (finite, low < high), ``num`` is
    not an integer in 2..MAX_POINTS, ``exposure_s`` not in (0, MAX_EXPOSURE_S] s, or
    ``sample``/``md`` not dicts. A stage with motor-record soft limits (an ophyd-async
    ``Motor``) has them read first, before anything moves or the run opens.
    """
    arguments = plan_args(locals())
    require_device("cam", cam, AREA_DETECTOR)
    require_device("stage", stage, POSITIONER)
    require_optional_device("monitor", monitor, READABLE)
    limits_mm = require_limits("limits_mm", limits_mm, "mm")
    start_mm = require_range("start_mm", start_mm, *limits_mm, "mm")
    stop_mm = require_range("stop_mm", stop_mm, *limits_mm, "mm")
    num = require_count("num", num, 2, MAX_POINTS)
    require_positive("exposure_s", exposure_s, MAX_EXPOSURE_S, "s")
    require_metadata(sample, md)
    detectors = [cam] + ([monitor] if monitor is not None else [])
    metadata = start_metadata(ALIGNMENT, "alignment_scan", md, image_key=cam.name, exposure_s=exposure_s,
                              plan_args=arguments, **({"sample": sample} if sample else {}))
    from ophyd_async.core import TriggerInfo

    if has_soft_limits(stage):
        yield from check_axis_limits([(stage, min(start_mm, stop_mm), max(start_mm, stop_mm))])
    yield from bps.prepare(cam, TriggerInfo(livetime=exposure_s), wait=True)
    return (yield from bp.scan(detectors, stage, start_mm, stop_mm, num, md=metadata))
