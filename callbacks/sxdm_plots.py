"""Figures of SXDM: strain and rotation maps per particle, heterogeneity compared across samples.

As in the reference study: for each particle three maps, dd/d, theta_xy and theta_xz
(deg), on the particle mask (`maps_figure`), and the standard deviations of the three
over each particle side by side (`sigma_figure`). Compared panels share one colour scale
per quantity (symmetric about 0), so a wider distribution looks wider; images carry a
scale bar in um. `maps_from_derived_run` reads a stored SXDM analysis; `SxdmLivePlot`
follows one live (running maps per completed angle, final maps at the end). Computing
never depends on plotting; the look is `figure_style`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import event_model
import matplotlib.pyplot as plt
import numpy as np

from .figure_style import (
    DEGREE,
    INTENSITY_CMAP,
    ROTATION_CMAP,
    STRAIN_CMAP,
    colorbar,
    journal_style,
    label_bars,
    nice_length,
    scale_bar,
    symmetric_limit,
)

PANELS = (
    ("dd_over_d", "Δd/d", "Δd/d (10⁻³)", 1e3, STRAIN_CMAP),
    ("theta_xy", "θ_xy", f"θ_xy ({DEGREE})", 1.0, ROTATION_CMAP),
    ("theta_xz", "θ_xz", f"θ_xz ({DEGREE})", 1.0, ROTATION_CMAP),
)
"""(map name, title, colorbar label with unit, display scale, colormap) of the three
panels per particle."""

SIGMAS = (
    ("sigma_dd_over_d", "σ(Δd/d)", "σ(Δd/d) (10⁻³)", 1e3, ""),
    ("sigma_theta_xy_deg", "σ(θ_xy)", f"σ(θ_xy) ({DEGREE})", 1.0, DEGREE),
    ("sigma_theta_xz_deg", "σ(θ_xz)", f"σ(θ_xz) ({DEGREE})", 1.0, DEGREE),
)
"""(key, title, axis label with unit, display scale, unit on the bars: none where the
axis label carries a power of ten) of the sigma bars."""


def _masked(maps: Mapping[str, Any], name: str) -> np.ma.MaskedArray:
    values = np.asarray(maps[name], dtype=np.float64)
    inside = np.asarray(maps["mask"], dtype=bool) if "mask" in maps else np.isfinite(values)
    return np.ma.masked_where(~inside | ~np.isfinite(values), values)


def maps_figure(maps_by_sample: Mapping[str, Mapping[str, Any]], step_um: float | None = None, figure=None):
    """One row per sample: dd/d, theta_xy, theta_xz maps over the particle mask. Each
    column (quantity) has one colour scale for every sample, symmetric about 0 (+- the
    99th percentile of |value| over all of them), and one colorbar with its unit;
    ``step_um`` (raster step) gives the images an extent in um and a scale bar.
    ``maps_by_sample``: label -> maps (as the ``maps`` stream holds them)."""
    with journal_style():
        rows = len(maps_by_sample)
        fig = figure or plt.figure(figsize=(7.2, 2.2 * rows + 0.6), layout="constrained")
        fig.clear()
        axes = np.atleast_2d(fig.subplots(rows, len(PANELS), squeeze=False))
        for col, (name, title, unit_label, scale, cmap) in enumerate(PANELS):
            images = [_masked(maps, name) * scale for maps in maps_by_sample.values()]
            limit = symmetric_limit(images)
            shown = None
            for row, (label, image) in enumerate(zip(maps_by_sample, images, strict=True)):
                ax = axes[row, col]
                ny, nx = image.shape
                extent = None if step_um is None else (0, nx * step_um, ny * step_um, 0)
                shown = ax.imshow(image, cmap=cmap, vmin=-limit, vmax=limit, extent=extent, interpolation="nearest")
                ax.set_axis_off()
                ax.set_title(f"{label}: {title}" if col == 0 else title)
                if step_um is not None:
                    scale_bar(ax, nice_length(nx * step_um))
            colorbar(shown, axes[:, col], unit_label, location="bottom", shrink=0.8, extend="both")
    return fig


def sigma_figure(sigmas_by_sample: Mapping[str, Mapping[str, float]], figure=None):
    """Bars of sigma(dd/d), sigma(theta_xy), sigma(theta_xz) per sample (label -> values
    keyed like the ``maps`` stream), each bar labelled with its value and unit."""
    with journal_style():
        fig = figure or plt.figure(figsize=(8.5, 2.8), layout="constrained")
        fig.clear()
        labels = list(sigmas_by_sample)
        for ax, (key, title, axis_label, scale, unit) in zip(fig.subplots(1, len(SIGMAS)), SIGMAS):
            values = [scale * float(sigmas_by_sample[label][key]) for label in labels]
            bars = ax.bar(range(len(labels)), values, color=plt.cm.tab10(np.arange(len(labels)) % 10))
            label_bars(ax, bars, "{:.3g}", unit)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
            ax.set(title=title, ylabel=axis_label)
    return fig


def maps_from_derived_run(run) -> dict[str, Any]:
    """The final maps and sigmas of a stored SXDM analysis (a derived-run Tiled client)."""
    stream = run["maps"]
    return {key: np.asarray(stream[key].read())[0] for key in stream if key not in ("time", "seq_num") and not key.startswith("ts_")}


class SxdmLivePlot(event_model.DocumentRouter):
    """Live SXDM figure: subscribe it to an `SxdmCallback` (``sxdm.subscribe(plot)``).

    Redraws the running intensity and dd/d maps at each completed angle, and the final
    three maps when the analysis ends."""

    def __init__(self, figure=None, step_um: float | None = None):
        super().__init__()
        self.figure, self.step_um = figure, step_um

    def start(self, doc: dict[str, Any]) -> None:
        self._streams: dict[str, str] = {}

    def descriptor(self, doc: dict[str, Any]) -> None:
        self._streams[doc["uid"]] = doc["name"]

    def event(self, doc: dict[str, Any]) -> None:
        stream = self._streams.get(doc["descriptor"])
        if stream == "angles":
            self.draw_running(doc["data"])
        elif stream == "maps":
            self.figure = maps_figure({"final": doc["data"]}, self.step_um, figure=self.figure)
            self.figure.canvas.draw_idle()

    def draw_running(self, data: Mapping[str, Any]):
        """Intensity of the angle just completed, running intensity and running dd/d."""
        self.figure = self.figure or plt.figure(figsize=(11, 3.2), layout="constrained")
        self.figure.clear()
        panels: Sequence[tuple[str, str]] = (
            ("intensity_angle", f"intensity at θ = {data['theta_deg']:.3f}{DEGREE}"),
            ("intensity", "intensity, all angles so far"),
            ("dd_over_d", "Δd/d so far (unregistered)"),
        )
        for ax, (name, title) in zip(self.figure.subplots(1, len(panels)), panels):
            image = np.ma.masked_invalid(np.asarray(data[name], dtype=np.float64))
            self.figure.colorbar(ax.imshow(image, cmap=INTENSITY_CMAP if name != "dd_over_d" else STRAIN_CMAP), ax=ax, shrink=0.8)
            ax.set_title(title, fontsize=9)
        self.figure.canvas.draw_idle()
        return self.figure
