"""Figures of SXDM: strain and rotation maps per particle, heterogeneity compared across samples.

As in the reference study: for each particle three maps, dd/d, theta_xy and theta_xz
(deg), on the particle mask (`maps_figure`), and the standard deviations of the three
over each particle side by side (`sigma_figure`). `maps_from_derived_run` reads a stored
SXDM analysis; `SxdmLivePlot` follows one live (running maps per completed angle, final
maps at the end). Computing never depends on plotting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import event_model
import matplotlib.pyplot as plt
import numpy as np

PANELS = (
    ("dd_over_d", "dd/d", "RdBu_r"),
    ("theta_xy", "theta_xy (deg)", "PuOr_r"),
    ("theta_xz", "theta_xz (deg)", "PuOr_r"),
)
"""(map name, label, colormap) of the three panels per particle."""

SIGMAS = (
    ("sigma_dd_over_d", "sigma(dd/d)"),
    ("sigma_theta_xy_deg", "sigma(theta_xy) (deg)"),
    ("sigma_theta_xz_deg", "sigma(theta_xz) (deg)"),
)


def _masked(maps: Mapping[str, Any], name: str) -> np.ma.MaskedArray:
    values = np.asarray(maps[name], dtype=np.float64)
    inside = np.asarray(maps["mask"], dtype=bool) if "mask" in maps else np.isfinite(values)
    return np.ma.masked_where(~inside | ~np.isfinite(values), values)


def maps_figure(maps_by_sample: Mapping[str, Mapping[str, Any]], step_um: float | None = None, figure=None):
    """One row per sample: dd/d, theta_xy, theta_xz maps over the particle mask, each on a
    colour scale symmetric about 0 (+- its 99th percentile of |value|); ``step_um`` puts
    the axes in um. ``maps_by_sample``: label -> maps (as the ``maps`` stream holds them)."""
    fig = figure or plt.figure(figsize=(11, 3.2 * len(maps_by_sample)), layout="constrained")
    fig.clear()
    axes = np.atleast_2d(fig.subplots(len(maps_by_sample), len(PANELS), squeeze=False))
    for row, (label, maps) in zip(axes, maps_by_sample.items()):
        for ax, (name, title, cmap) in zip(row, PANELS):
            image = _masked(maps, name)
            limit = float(np.percentile(np.abs(image.compressed()), 99)) if image.count() else 1.0
            ny, nx = image.shape
            extent = None if step_um is None else (0, nx * step_um, ny * step_um, 0)
            shown = ax.imshow(image, cmap=cmap, vmin=-limit or -1, vmax=limit or 1, extent=extent)
            fig.colorbar(shown, ax=ax, shrink=0.8)
            ax.set_title(f"{label}: {title}", fontsize=9)
            if step_um is not None:
                ax.set(xlabel="x (um)", ylabel="y (um)")
    return fig


def sigma_figure(sigmas_by_sample: Mapping[str, Mapping[str, float]], figure=None):
    """Bars of sigma(dd/d), sigma(theta_xy), sigma(theta_xz) per sample (label -> values
    keyed like the ``maps`` stream)."""
    fig = figure or plt.figure(figsize=(11, 3.4), layout="constrained")
    fig.clear()
    labels = list(sigmas_by_sample)
    for ax, (key, title) in zip(fig.subplots(1, len(SIGMAS)), SIGMAS):
        values = [float(sigmas_by_sample[label][key]) for label in labels]
        ax.bar(range(len(labels)), values, color=plt.cm.tab10(np.arange(len(labels)) % 10))
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
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
            ("intensity_angle", f"intensity at {data['theta_deg']:.3f} deg"),
            ("intensity", "intensity, all angles so far"),
            ("dd_over_d", "dd/d so far (unregistered)"),
        )
        for ax, (name, title) in zip(self.figure.subplots(1, len(panels)), panels):
            image = np.ma.masked_invalid(np.asarray(data[name], dtype=np.float64))
            self.figure.colorbar(ax.imshow(image, cmap="viridis" if name != "dd_over_d" else "RdBu_r"), ax=ax, shrink=0.8)
            ax.set_title(title, fontsize=9)
        self.figure.canvas.draw_idle()
        return self.figure
