"""Figures of operando XRD: the classic in situ figure and the lattice evolution.

`operando_figure` draws, from the XRD reduction's derived data,

(a) the (003) region of I(Q) as a contour against frame time, beside the potential;
(b) a, c and V against potential;
(c) c/c0 against (a/a0)^2, the anisotropy of the lattice change.

`XrdLivePlot` is the live version: a callback subscribed to the XRD analysis's derived
run, redrawing every few frames. Computing never depends on plotting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import event_model
import matplotlib.pyplot as plt
import numpy as np

Q003_PLOT_WINDOW = (1.26, 1.44)


def operando_figure(
    table: Mapping[str, np.ndarray],
    q: np.ndarray,
    patterns: np.ndarray,
    title: str = "",
    figure=None,
):
    """The three-panel operando XRD figure; ``table`` holds the ``xrd`` stream columns
    (``potential_V``, ``a_A``, ``c_A``, ``volume_A3``), ``patterns`` is (n_frames, npt)."""
    fig = figure or plt.figure(figsize=(12, 4.2), layout="constrained")
    fig.clear()
    ax_map, ax_v, ax_lat, ax_aniso = fig.subplots(1, 4, width_ratios=[2.2, 0.8, 2, 2])
    frames = np.arange(len(patterns))
    potential = np.asarray(table.get("potential_V", np.full(len(frames), np.nan)), dtype=float)
    window = (q >= Q003_PLOT_WINDOW[0]) & (q <= Q003_PLOT_WINDOW[1])
    if len(frames) >= 2 and window.any():
        ax_map.contourf(q[window], frames, np.asarray(patterns)[:, window], levels=30, cmap="viridis")
    ax_map.set(xlabel="Q (1/A)", ylabel="frame", title="(003) intensity")
    ax_v.plot(potential, frames, color="k")
    ax_v.set(xlabel="E (V)", yticks=[])
    ax_v.set_ylim(ax_map.get_ylim())
    a, c = np.asarray(table["a_A"], dtype=float), np.asarray(table["c_A"], dtype=float)
    volume = np.asarray(table["volume_A3"], dtype=float)
    ax_lat.plot(potential, c / c[0], "o-", ms=3, label="c/c0")
    ax_lat.plot(potential, a / a[0], "s-", ms=3, label="a/a0")
    ax_lat.plot(potential, volume / volume[0], "^-", ms=3, label="V/V0")
    ax_lat.set(xlabel="E (V vs Li/Li+)", ylabel="relative to first frame", title="lattice")
    ax_lat.legend(fontsize=8)
    ax_aniso.plot((a / a[0]) ** 2, c / c[0], "o-", ms=3)
    ax_aniso.set(xlabel="(a/a0)^2", ylabel="c/c0", title="anisotropy")
    if title:
        fig.suptitle(title)
    return fig


def figure_from_derived_run(run, title: str = ""):
    """The operando figure of a stored XRD reduction (a derived-run Tiled client)."""
    table = run["xrd"].read()
    q = np.asarray(run["reduction"]["q"].read())[0]
    patterns = np.asarray(run["patterns"]["intensity"].read())
    return operando_figure({k: np.asarray(table[k]) for k in table}, q, patterns, title=title)


class XrdLivePlot(event_model.DocumentRouter):
    """Live operando figure: subscribe it to an `XrdCallback` (``xrd.subscribe(plot)``)."""

    def __init__(self, redraw_every: int = 5, figure=None):
        super().__init__()
        self.redraw_every = redraw_every
        self.figure = figure

    def start(self, doc: dict[str, Any]) -> None:
        self._streams: dict[str, str] = {}
        self._rows: list[dict[str, Any]] = []
        self._patterns: list[np.ndarray] = []
        self._q: np.ndarray | None = None

    def descriptor(self, doc: dict[str, Any]) -> None:
        self._streams[doc["uid"]] = doc["name"]

    def event(self, doc: dict[str, Any]) -> None:
        stream = self._streams.get(doc["descriptor"])
        if stream == "reduction":
            self._q = np.asarray(doc["data"]["q"])
        elif stream == "xrd":
            self._rows.append(doc["data"])
        elif stream == "patterns":
            self._patterns.append(np.asarray(doc["data"]["intensity"]))
            if len(self._patterns) % self.redraw_every == 0:
                self.draw()

    def stop(self, doc: dict[str, Any]) -> None:
        self.draw()

    def draw(self):
        if self._q is None or not self._rows:
            return None
        n = min(len(self._rows), len(self._patterns))
        table = {key: np.array([row[key] for row in self._rows[:n]]) for key in self._rows[0]}
        self.figure = operando_figure(table, self._q, np.array(self._patterns[:n]), figure=self.figure)
        self.figure.canvas.draw_idle()
        return self.figure
