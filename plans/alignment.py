"""Alignment: scan a stage while a camera images the beam (or a particle)."""

from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import numpy as np
from bluesky.protocols import Movable, Readable
from bluesky.utils import MsgGenerator

from ..schema.start import ALIGNMENT, start_metadata
from .metadata import plan_args
from .validation import require_count, require_positive, require_within_limits


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
    Raises PlanArgumentError before anything moves if a position is outside
    ``limits_mm`` or the counts/exposure are not sensible.
    """
    arguments = plan_args(locals())
    require_count("num", num, minimum=2, maximum=100_000)
    require_positive("exposure_s", exposure_s)
    require_within_limits("stage", list(np.linspace(start_mm, stop_mm, num)), limits_mm, "mm")
    detectors = [cam] + ([monitor] if monitor is not None else [])
    metadata = start_metadata(ALIGNMENT, "alignment_scan", md, image_key=cam.name, exposure_s=exposure_s,
                              plan_args=arguments, **({"sample": sample} if sample else {}))
    from ophyd_async.core import TriggerInfo

    yield from bps.prepare(cam, TriggerInfo(livetime=exposure_s), wait=True)
    return (yield from bp.scan(detectors, stage, start_mm, stop_mm, num, md=metadata))
