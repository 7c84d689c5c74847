"""Live frame statistics: total counts and beam/peak centroid per detector frame."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.frame_quality import BAD, OK, assess_frame
from ..analysis.frames import FrameStatistics, frame_statistics
from ..schema.start import ALIGNMENT
from .derived import AnalysisCallback


class FrameStatisticsCallback(AnalysisCallback):
    """Per frame of ``image_key``: total, maximum, centroid; derived stream ``frame_stats``.

    background: counts per pixel subtracted first (None: each frame's median).

    Each frame is checked first (`analysis.frame_quality.assess_frame` against the shape
    the raw descriptor declares): bad pixels are left out, a bad frame's statistics are
    NaN; every row records the frame's quality and reason.

    Live values (soft signals, readable by plans): ``total`` and ``centroid_col`` of the
    latest good frame. The derived run also carries the raw run's scalar readings of each row,
    so plots of "total vs motor" need only the derived run.
    """

    analysis = "frame_statistics"
    #: the quick look of alignment scans; technique runs have their own analyses
    techniques = (ALIGNMENT,)

    def __init__(self, image_key: str | None = None, background: float | None = None, **kwargs: Any):
        super().__init__(image_key=image_key, **kwargs)
        self.background = background
        self.live_signal("total", float, 0.0)
        self.live_signal("centroid_col", float, 0.0)

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "background": self.background}

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        quality, mask = assess_frame(frame, self.frame_shape or np.shape(frame))
        stats = FrameStatistics.not_measured() if quality.status == BAD else frame_statistics(frame, self.background, mask)
        scalars = {k: v for k, v in data.items() if np.ndim(v) == 0 and not isinstance(v, str)}
        self.derived.event(
            "frame_stats",
            {"raw_seq_num": seq_num, **scalars, **vars(stats), **quality.record()},
        )
        if quality.status == OK:
            self.set_live("total", stats.total)
            self.set_live("centroid_col", stats.centroid_col)
