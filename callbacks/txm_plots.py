"""Figures of TXM-XANES: white-line energy maps and their distribution.

`whiteline_figure` draws what the reference study shows for one particle: three
orthogonal slices through the white-line (WL) energy volume (or the 2D map) and the
histogram of WL energies over the particle with its sigma. `comparison_figure` puts
several particles (e.g. charged SC-NC91 and SC-NM91) on one colour scale (robust
percentiles of all their voxels together, so neither saturates nor hides the other's
spread; clipped ends shown as colorbar arrows), with scale bars in um, and overlays their
histograms. `figure_from_derived_run` reads a stored ``txm_xanes`` derived run;
`TxmLivePlot` follows the per-energy previews while the scan runs and draws the result at
the end. Computing never depends on plotting; the look is `figure_style`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import event_model
import matplotlib.pyplot as plt
import numpy as np

from .figure_style import ENERGY_CMAP, colorbar, journal_style, nice_length, robust_limits, scale_bar

#: colour scale of WL maps: these percentiles of all compared particles' WL energies
PERCENTILES = (1.0, 99.0)
WL_LABEL = "white-line energy (eV)"


def _slices(wl_eV: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The three central orthogonal slices of a (z, y, x) volume, or the 2D map itself."""
    if wl_eV.ndim == 2:
        return [("map", wl_eV)]
    z, y, x = (n // 2 for n in wl_eV.shape)
    return [("xy slice", wl_eV[z]), ("xz slice", wl_eV[:, y]), ("yz slice", wl_eV[:, :, x])]


def _draw_row(axes, wl_eV: np.ndarray, vmin: float, vmax: float, label: str, voxel_um: float | None):
    image = None
    for n, (ax, (title, plane)) in enumerate(zip(axes, _slices(wl_eV), strict=False)):
        ny, nx = plane.shape
        extent = (0, nx * voxel_um, ny * voxel_um, 0) if voxel_um else None
        image = ax.imshow(np.ma.masked_invalid(plane), cmap=ENERGY_CMAP, vmin=vmin, vmax=vmax, origin="upper",
                          extent=extent, interpolation="nearest")
        ax.set_title(f"{label}: {title}" if n == 0 else title)
        ax.set_axis_off()
        if voxel_um:
            scale_bar(ax, nice_length(nx * voxel_um))
    return image


def _histogram_range(results, tail: float = 1e-3, pad: float = 0.1) -> tuple[float, float]:
    """The WL range holding all but ``tail`` of every histogram's voxels at either end,
    widened by ``pad`` of its width: the empty far bins are not drawn."""
    lows, highs = [], []
    for result in results:
        counts = np.asarray(result["counts"], dtype=float)
        edges = np.asarray(result["bin_edges_eV"], dtype=float)
        cumulative = np.cumsum(counts) / max(counts.sum(), 1.0)
        lows.append(edges[np.searchsorted(cumulative, tail)])
        highs.append(edges[np.searchsorted(cumulative, 1 - tail) + 1])
    low, high = min(lows), max(highs)
    return low - pad * (high - low), high + pad * (high - low)


def whiteline_figure(
    wl_eV: np.ndarray,
    counts: np.ndarray,
    bin_edges_eV: np.ndarray,
    sigma_eV: float,
    title: str = "",
    voxel_um: float | None = None,
    figure=None,
):
    """Three orthogonal slices of the WL energy volume (eV; NaN outside the particle) and
    the WL histogram (``counts`` over ``bin_edges_eV``) labelled with sigma (eV)."""
    return comparison_figure(
        {title or "particle": {"wl_eV": wl_eV, "counts": counts, "bin_edges_eV": bin_edges_eV,
                               "sigma_eV": sigma_eV, "voxel_um": voxel_um}},
        figure=figure,
    )


def comparison_figure(results: Mapping[str, Mapping[str, Any]], title: str = "", figure=None):
    """One row per particle (slices of its WL energies on a common colour scale, see the
    module docstring) and a last panel overlaying the normalised WL histograms, sigma in
    the legend.

    results: label -> {"wl_eV", "counts", "bin_edges_eV", "sigma_eV"[, "voxel_um"]}, the
    ``whiteline`` and ``statistics`` streams of each derived run.
    """
    labels = list(results)
    volumes = [np.asarray(results[k]["wl_eV"], dtype=float) for k in labels]
    n_slices = max(len(_slices(v)) for v in volumes)
    with journal_style():
        fig = figure or plt.figure(figsize=(1.9 * n_slices + 3.2, 1.9 * len(labels) + 0.5), layout="constrained")
        fig.clear()
        grid = fig.add_gridspec(len(labels), n_slices + 1, width_ratios=[1] * n_slices + [1.9])
        vmin, vmax = robust_limits(volumes, PERCENTILES)
        image, image_axes = None, []
        for row, (label, wl) in enumerate(zip(labels, volumes, strict=True)):
            axes = [fig.add_subplot(grid[row, col]) for col in range(len(_slices(wl)))]
            image_axes += axes
            image = _draw_row(axes, wl, vmin, vmax, label, results[label].get("voxel_um"))
        colorbar(image, image_axes, WL_LABEL, max_ticks=4, location="bottom", shrink=0.7, extend="both")
        ax_hist = fig.add_subplot(grid[:, n_slices])
        for label in labels:
            counts = np.asarray(results[label]["counts"], dtype=float)
            edges = np.asarray(results[label]["bin_edges_eV"], dtype=float)
            density = counts / max(counts.sum(), 1.0) / np.diff(edges)
            ax_hist.stairs(density, edges, fill=True, alpha=0.45,
                           label=f"{label}: σ = {results[label]['sigma_eV']:.3f} eV")
        ax_hist.set(xlabel=WL_LABEL, ylabel="voxel density (1/eV)", title="WL distribution")
        ax_hist.set_xlim(_histogram_range(results.values()))
        ax_hist.legend(loc="upper left")
        if title:
            fig.suptitle(title)
    return fig


def derived_result(run) -> dict[str, Any]:
    """What `comparison_figure` needs, from a stored ``txm_xanes`` derived run (Tiled client)."""
    whiteline, statistics = run["whiteline"], run["statistics"]
    return {
        "wl_eV": whiteline["wl_eV"].read()[0],
        "voxel_um": float(whiteline["voxel_um"].read()[0]),
        "counts": statistics["counts"].read()[0],
        "bin_edges_eV": statistics["bin_edges_eV"].read()[0],
        "sigma_eV": float(statistics["wl_sigma_eV"].read()[0]),
    }


def figure_from_derived_run(run, title: str = ""):
    """The WL figure of a stored ``txm_xanes`` derived run."""
    return comparison_figure({title or "particle": derived_result(run)})


class TxmLivePlot(event_model.DocumentRouter):
    """Live view: subscribe it to a `TxmXanesCallback` (``txm.subscribe(plot)``). Shows
    the latest per-energy preview during the scan and the WL figure at the end."""

    def __init__(self, figure=None):
        super().__init__()
        self.figure = figure

    def start(self, doc: dict[str, Any]) -> None:
        self._streams: dict[str, str] = {}
        self._result: dict[str, Any] = {}
        self._title = doc.get("sample", {}).get("name", "") if isinstance(doc.get("sample"), dict) else ""

    def descriptor(self, doc: dict[str, Any]) -> None:
        self._streams[doc["uid"]] = doc["name"]

    def event(self, doc: dict[str, Any]) -> None:
        stream = self._streams.get(doc["descriptor"])
        data = doc["data"]
        if stream == "preview":
            self.figure = self.figure or plt.figure(figsize=(4, 4), layout="constrained")
            self.figure.clear()
            ax = self.figure.add_subplot()
            ax.imshow(np.asarray(data["image"], dtype=float), cmap="gray")
            ax.set(title=f"{data['energy_eV']:.1f} eV", xticks=[], yticks=[])
            self.figure.canvas.draw_idle()
        elif stream == "whiteline":
            self._result.update(wl_eV=np.asarray(data["wl_eV"], dtype=float), voxel_um=data["voxel_um"])
        elif stream == "statistics":
            self._result.update(counts=data["counts"], bin_edges_eV=data["bin_edges_eV"], sigma_eV=data["wl_sigma_eV"])

    def stop(self, doc: dict[str, Any]) -> None:
        if {"wl_eV", "counts"} <= set(self._result):
            self.figure = comparison_figure({self._title or "particle": self._result}, figure=self.figure)
            self.figure.canvas.draw_idle()
