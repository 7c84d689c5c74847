"""The analyses nanostrain runs live on every session, and on replay."""

from __future__ import annotations

from .derived import AnalysisCallback
from .electrochem import ElectrochemistryCallback
from .frame_stats import FrameStatisticsCallback
from .sxdm import SxdmCallback
from .txm import TxmXanesCallback
from .xrd import XrdCallback
from .xrd_calibration import XrdCalibrationCallback

#: every live analysis class by its ``analysis`` name (the name its derived runs record)
ANALYSES: dict[str, type[AnalysisCallback]] = {
    cls.analysis: cls
    for cls in (FrameStatisticsCallback, XrdCallback, XrdCalibrationCallback, ElectrochemistryCallback,
                SxdmCallback, TxmXanesCallback)
}


def default_analyses() -> list[AnalysisCallback]:
    """Fresh instances of every live analysis (default settings); each picks the runs it
    applies to."""
    return [cls() for cls in ANALYSES.values()]

