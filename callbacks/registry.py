"""The analyses nanostrain runs live on every session, and on replay."""

from __future__ import annotations

from collections.abc import Iterable

from ophyd_async.core import SignalR

from .derived import AnalysisCallback
from .electrochem import ElectrochemistryCallback
from .frame_stats import FrameStatisticsCallback
from .sxdm import SxdmCallback
from .txm import TxmXanesCallback
from .xas import XasCallback
from .xrd import XrdCallback
from .xrd_calibration import XrdCalibrationCallback

#: every live analysis class by its ``analysis`` name (the name its derived runs record)
ANALYSES: dict[str, type[AnalysisCallback]] = {
    cls.analysis: cls
    for cls in (FrameStatisticsCallback, XrdCallback, XrdCalibrationCallback, ElectrochemistryCallback,
                SxdmCallback, TxmXanesCallback, XasCallback)
}


def default_analyses() -> list[AnalysisCallback]:
    """Fresh instances of every live analysis (default settings); each picks the runs it
    applies to."""
    return [cls() for cls in ANALYSES.values()]


def live_signals(analyses: Iterable[AnalysisCallback]) -> dict[str, SignalR]:
    """The live signals of ``analyses`` keyed ``f"{analysis}_{signal}"``; two analyses of
    one name would clash, which raises ValueError."""
    signals: dict[str, SignalR] = {}
    for analysis in analyses:
        for name, signal in analysis.signals.items():
            key = f"{analysis.analysis}_{name}"
            if key in signals:
                raise ValueError(f"two live analyses publish the live signal {key!r}")
            signals[key] = signal
    return signals
