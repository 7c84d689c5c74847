"""Figures of operando XRD: the classic in situ figure and the lattice evolution.

`operando_figure` draws, from the XRD reduction's derived data (the study's Fig. 2),

(a) the (003) region of I(Q) against time (h) with its intensity colorbar; frames are
    unevenly spaced (the feedback takes them densely at the H2 -> H3 collapse) and a
    beam interruption leaves a gap, so the y axis is time, never the frame number;
(b) the potential against the same time axis, beside the map (the cycler's full record
    when the raw ``echem`` stream is given, else the values at the frames);
(c) a/a0, c/c0 and V/V0 against potential;
(d) c/c0 against (a/a0)^2, the anisotropy of the lattice change;

charge solid, discharge dashed in (b)-(d). `XrdLivePlot` is the live version: a callback
subscribed to the XRD analysis's derived run, redrawing every few frames. Computing never
depends on plotting; the look is `figure_style`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import event_model
import matplotlib.pyplot as plt
import numpy as np

from ..analysis.electrochem import cumulative_time
from .figure_style import (
    ANGSTROM,
    INTENSITY_CMAP,
    INV_ANGSTROM,
    POTENTIAL_LABEL,
    colorbar,
    direction_legend,
    journal_style,
    label_bars,
    plot_by_direction,
    robust_limits,
)

Q003_PLOT_WINDOW = (1.26, 1.44)
#: a time step this many times the median frame spacing is drawn as a gap (beam off)
GAP_FACTOR = 4.0


def _column(table: Mapping[str, Any], key: str, n: int) -> np.ndarray:
    return np.asarray(table[key], dtype=float) if key in table else np.full(n, np.nan)


def frame_times_h(table: Mapping[str, Any], echem: Mapping[str, Any] | None = None) -> np.ndarray:
    """Time of each frame since the protocol began (h), from the cycler's step clock
    (``step_time_s``, ``step_index`` columns). A step's offset is the cumulative time of
    the steps before it (`analysis.electrochem.cumulative_time`), taken from ``echem``
    (the cycler's full record, same columns) when given, else from the frames themselves
    (which may end a little before a step does). Without a step clock: frame numbers."""
    n = len(next(iter(table.values()))) if table else 0
    if "step_time_s" not in table or "step_index" not in table:
        return np.arange(n, dtype=float)
    source = echem if echem is not None and "step_time_s" in echem else table
    step_time = np.asarray(source["step_time_s"], dtype=float)
    steps = np.asarray(source["step_index"])
    offsets = dict(zip(steps.tolist(), (cumulative_time(step_time, steps) - step_time).tolist()))
    frame_steps = np.asarray(table["step_index"]).tolist()
    return (np.array([offsets.get(s, np.nan) for s in frame_steps]) + np.asarray(table["step_time_s"], dtype=float)) / 3600.0


def _with_gaps(times: np.ndarray, patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert a NaN row in the middle of every time step longer than GAP_FACTOR x the
    median step, so a beam interruption shows as a blank band rather than a smear."""
    steps = np.diff(times)
    if steps.size < 2:
        return times, patterns
    gaps = np.flatnonzero(steps > GAP_FACTOR * np.median(steps)) + 1
    blank = np.full((gaps.size, patterns.shape[1]), np.nan)
    middle = (times[gaps - 1] + times[gaps]) / 2
    return np.insert(times, gaps, middle), np.insert(patterns, gaps, blank, axis=0)


def operando_figure(
    table: Mapping[str, np.ndarray],
    q: np.ndarray,
    patterns: np.ndarray,
    title: str = "",
    figure=None,
    echem: Mapping[str, np.ndarray] | None = None,
):
    """The four-panel operando XRD figure (see the module docstring); ``table`` holds the
    ``xrd`` stream columns (``potential_V``, ``current_mA``, ``step_time_s``,
    ``step_index``, ``a_A``, ``c_A``, ``volume_A3``), ``patterns`` is (n_frames, npt) on
    ``q`` (1/A); ``echem`` optionally the raw run's cycler record (same column names)."""
    with journal_style():
        fig = figure or plt.figure(figsize=(10, 3.4), layout="constrained")
        fig.clear()
        ax_map, ax_v, ax_lat, ax_aniso = fig.subplots(1, 4, width_ratios=[2.0, 0.9, 1.9, 1.9])
        patterns = np.asarray(patterns, dtype=float)
        n = len(patterns)
        times = frame_times_h(table, echem)[:n]
        potential = _column(table, "potential_V", n)[:n]
        current = _column(table, "current_mA", n)[:n]
        window = (q >= Q003_PLOT_WINDOW[0]) & (q <= Q003_PLOT_WINDOW[1])
        if n >= 2 and window.any():
            t, image = _with_gaps(times, patterns[:, window])
            vmin, vmax = robust_limits([image], (1.0, 99.5))
            mesh = ax_map.pcolormesh(q[window], t, image, shading="nearest", cmap=INTENSITY_CMAP,
                                     vmin=vmin, vmax=vmax, rasterized=True)
            colorbar(mesh, ax_map, "intensity (a.u.)", location="top", shrink=0.8)
        ax_map.set(xlabel=f"Q ({INV_ANGSTROM})", ylabel="time (h)")
        if echem is not None and "potential_V" in echem:
            echem_times = frame_times_h(echem, echem)
            plot_by_direction(ax_v, echem["potential_V"], echem_times, echem.get("current_mA", np.ones(len(echem_times))), "k")
        else:
            plot_by_direction(ax_v, potential, times, current, "k", marker=".")
        ax_v.set(xlabel=POTENTIAL_LABEL, title="potential")
        ax_v.tick_params(labelleft=False)
        if n >= 2:
            ax_v.set_ylim(ax_map.get_ylim())
        a, c = _column(table, "a_A", n)[:n], _column(table, "c_A", n)[:n]
        volume = _column(table, "volume_A3", n)[:n]
        for values, label, color in ((c, "c/c₀", "C0"), (a, "a/a₀", "C1"), (volume, "V/V₀", "C2")):
            plot_by_direction(ax_lat, potential, values / _first_finite(values), current, color, label=label, marker=".")
        ax_lat.set(xlabel=POTENTIAL_LABEL, ylabel="relative to the first frame", title="lattice")
        ax_lat.legend(loc="lower left")
        a0, c0 = _first_finite(a), _first_finite(c)
        plot_by_direction(ax_aniso, (a / a0) ** 2, c / c0, current, "C0", marker=".")
        ax_aniso.set(xlabel="(a/a₀)²", ylabel="c/c₀", title="anisotropy")
        direction_legend(ax_aniso, loc="lower right")
        if title:
            fig.suptitle(title)
    return fig


def _first_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite[0]) if finite.size else np.nan


def figure_from_derived_run(run, title: str = "", echem: Mapping[str, np.ndarray] | None = None):
    """The operando figure of a stored XRD reduction (a derived-run Tiled client);
    ``echem``: the raw run's cycler record (`echem_record`), for the full voltage profile."""
    table = run["xrd"].read()
    q = np.asarray(run["reduction"]["q"].read())[0]
    patterns = np.asarray(run["patterns"]["intensity"].read())
    return operando_figure({k: np.asarray(table[k]) for k in table}, q, patterns, title=title, echem=echem)


def echem_record(raw_run) -> dict[str, np.ndarray] | None:
    """The cycler's readings of a raw cycling run (its ``echem`` stream), renamed to the
    columns of ``start["echem_keys"]`` (``potential_V``, ``current_mA``, ...); None if
    the run has none."""
    keys = raw_run.metadata["start"].get("echem_keys") or {}
    if "echem" not in raw_run or not keys:
        return None
    table = raw_run["echem"].read()
    return {name: np.asarray(table[key]) for name, key in keys.items() if key in table}


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


def comparison_figure(runs: Mapping[str, Mapping[str, Any]], figure=None):
    """Operando XRD of several cells compared: (a) c/c0 against (a/a0)^2 for each
    (charge solid, discharge dashed), (b) c contraction and volume shrinkage (%) and (c)
    the largest (003) H2/H3 separation dc (A), as bars labelled with their values.

    runs: label -> {"table": the ``xrd`` stream columns, "c_contraction_pct",
    "volume_shrinkage_pct", "max_dc_A"} (see `nanostrain.report`)."""
    labels = list(runs)
    with journal_style():
        fig = figure or plt.figure(figsize=(10, 3.2), layout="constrained")
        fig.clear()
        ax_aniso, ax_pct, ax_dc = fig.subplots(1, 3, width_ratios=[1.3, 1.5, 1.0])
        for n, label in enumerate(labels):
            table = runs[label]["table"]
            size = len(table["c_A"])
            a, c = _column(table, "a_A", size), _column(table, "c_A", size)
            plot_by_direction(ax_aniso, (a / _first_finite(a)) ** 2, c / _first_finite(c),
                              _column(table, "current_mA", size), f"C{n % 10}", label=label)
        ax_aniso.set(xlabel="(a/a₀)²", ylabel="c/c₀", title="anisotropy of the lattice change")
        ax_aniso.legend(loc="lower right")
        positions = np.arange(len(labels))
        for offset, key, name, color in ((-0.2, "c_contraction_pct", "c contraction", "C0"),
                                         (0.2, "volume_shrinkage_pct", "volume shrinkage", "C2")):
            bars = ax_pct.bar(positions + offset, [runs[k][key] for k in labels], 0.4, label=name, color=color)
            label_bars(ax_pct, bars, "{:.1f}", "%")
        ax_pct.set_xticks(positions, labels, rotation=30, ha="right")
        ax_pct.set(ylabel="change over the cycle (%)", title="lattice contraction")
        ax_pct.set_ylim(top=ax_pct.get_ylim()[1] * 1.25)
        ax_pct.legend(loc="upper left", ncols=2)
        bars = ax_dc.bar(positions, [runs[k]["max_dc_A"] for k in labels], color="C3")
        label_bars(ax_dc, bars, "{:.2f}", ANGSTROM)
        ax_dc.set_xticks(positions, labels, rotation=30, ha="right")
        ax_dc.set(ylabel=f"largest H2/H3 separation Δc ({ANGSTROM})", title="phase coexistence")
    return fig
