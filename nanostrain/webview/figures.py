"""Figures of derived runs for the web view, drawn by the callbacks' plotting functions
and rendered to PNG on the server (no plotting library in the browser).

`FIGURES` maps an analysis name to a function of the derived run's client that returns a
matplotlib figure; analyses without an entry are shown as tables only. The server draws
off its main thread: the figures are drawn one at a time (pyplot keeps global state) and
closed once rendered.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable


def _xrd(run):
    from ..callbacks.xrd_plots import figure_from_derived_run

    return figure_from_derived_run(run)


def _sxdm(run):
    from ..callbacks.sxdm_plots import maps_figure, maps_from_derived_run

    return maps_figure({"final maps": maps_from_derived_run(run)})


def _txm(run):
    from ..callbacks.txm_plots import figure_from_derived_run

    return figure_from_derived_run(run)


FIGURES: dict[str, Callable] = {"xrd_reduction": _xrd, "sxdm_strain": _sxdm, "txm_xanes": _txm}
"""Figure function per analysis name (the derived run's ``start.analysis``)."""

_DRAWING = threading.Lock()


class NoFigureYet(LookupError):
    """The derived run holds too little to draw (its analysis has not published yet)."""


def has_figure(analysis: str) -> bool:
    """Whether derived runs of ``analysis`` have a figure."""
    return analysis in FIGURES


def render_png(run, dpi: int = 90) -> bytes:
    """The figure of the derived run ``run`` (a client) as PNG bytes. Raises KeyError for
    an analysis without a figure, `NoFigureYet` if the run holds too little to draw."""
    import matplotlib.pyplot as plt

    draw = FIGURES[run.metadata["start"].get("analysis", "")]
    with _DRAWING:
        before = set(plt.get_fignums())
        try:
            figure = draw(run)
        except (KeyError, IndexError, ValueError) as error:  # a stream or a row not published yet
            for number in set(plt.get_fignums()) - before:
                plt.close(number)
            raise NoFigureYet(f"derived run {run.metadata['start']['uid']}: {error!r}") from error
        try:
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=dpi)
            return buffer.getvalue()
        finally:
            plt.close(figure)
