"""The analyses nanostrain runs live on every session, and on replay."""

from __future__ import annotations

from .derived import AnalysisCallback
from .electrochem import ElectrochemistryCallback
from .frame_stats import FrameStatisticsCallback
from .sxdm import SxdmCallback
from .txm import TxmXanesCallback
from .xrd import XrdCallback
from .xrd_calibration import XrdCalibrationCallback


def default_analyses() -> list[AnalysisCallback]:
    """Fresh instances of every live analysis; each picks the runs it applies to."""
    return [FrameStatisticsCallback(image_key=None), XrdCallback(), XrdCalibrationCallback(), ElectrochemistryCallback(), SxdmCallback(),
            TxmXanesCallback()]
