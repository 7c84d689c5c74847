"""One look for every nanostrain figure, as a journal would print it.

What the plotting modules (`xrd_plots`, `sxdm_plots`, `txm_plots`) and the campaign
report share:

* `journal_style`: a matplotlib rc context (sans-serif 8 pt text, 9 pt titles, thin
  axes, ticks inside, no top/right spines), so figures read at column width;
* unit strings spelled properly (`ANGSTROM`, `INV_ANGSTROM`, `MICRON`, `DEGREE`);
* `colorbar` with its unit label, `scale_bar` in um on images, `robust_limits` and
  `symmetric_limit` for one colour scale over compared panels, `label_bars` for values
  (with units) on bar charts;
* `CHARGE` / `DISCHARGE` line styles and `direction_segments`, so charge and discharge
  are told apart in every cycling plot;
* `save_figure`: PNG (raster, 200 dpi) and SVG (vector) side by side.

Matplotlib provides the pieces (``AnchoredSizeBar``, ``bar_label``, ``rc_context``);
this module only fixes the choices.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import numpy as np

ANGSTROM = "Å"
INV_ANGSTROM = "Å⁻¹"
MICRON = "µm"
DEGREE = "°"
POTENTIAL_LABEL = "E (V vs Li/Li⁺)"

#: rc parameters of the journal look (sizes in points)
RC = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.2,
    "lines.markersize": 3,
    "image.cmap": "viridis",
    "savefig.bbox": "tight",
    "svg.fonttype": "none",  # text stays text in SVG
    "axes.formatter.useoffset": False,  # 8351.2 eV, not 0.2 + 8.351e3
}

#: line styles telling charge from discharge (same colour, solid vs dashed)
CHARGE = {"linestyle": "-"}
DISCHARGE = {"linestyle": "--"}

#: colormaps: diverging for signed strain/rotation, sequential for intensity and energy
STRAIN_CMAP = "RdBu_r"
ROTATION_CMAP = "PuOr_r"
INTENSITY_CMAP = "viridis"
ENERGY_CMAP = "plasma"

#: percentiles of the values a sequential colour scale spans (robust to hot voxels)
ROBUST_PERCENTILES = (2.0, 98.0)


@contextmanager
def journal_style() -> Iterator[None]:
    """Draw inside ``with journal_style():`` to get the journal look (`RC`)."""
    with mpl.rc_context(RC):
        yield


def _finite(arrays: Iterable[np.ndarray]) -> np.ndarray:
    values = [np.ma.filled(np.ma.asarray(a, dtype=float), np.nan).ravel() for a in arrays]
    joined = np.concatenate(values) if values else np.empty(0)
    return joined[np.isfinite(joined)]


def robust_limits(arrays: Iterable[np.ndarray], percentiles: tuple[float, float] = ROBUST_PERCENTILES) -> tuple[float, float]:
    """One colour scale (vmin, vmax) for several images: the given percentiles of all
    their finite (unmasked) values together; (0, 1) if there are none."""
    values = _finite(arrays)
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, percentiles)
    return float(low), float(max(high, low + 1e-12 * max(1.0, abs(low))))


def symmetric_limit(arrays: Iterable[np.ndarray], percentile: float = 99.0) -> float:
    """One symmetric scale (-L, L) for several signed images: L is the given percentile
    of |value| over all their finite values (1 if there are none or all are 0)."""
    values = np.abs(_finite(arrays))
    limit = float(np.percentile(values, percentile)) if values.size else 0.0
    return limit if limit > 0 else 1.0


def colorbar(mappable, ax, label: str, max_ticks: int = 5, **kwargs):
    """A colorbar for ``mappable`` beside ``ax`` (an axes or a list of axes) with its
    quantity and unit as ``label`` and at most ``max_ticks`` ticks; ``kwargs`` go to
    ``Figure.colorbar`` (e.g. ``extend="both"``: arrows where the scale clips the data)."""
    from matplotlib.ticker import MaxNLocator

    figure = np.atleast_1d(ax).ravel()[0].figure
    bar = figure.colorbar(mappable, ax=ax, **kwargs)
    bar.locator = MaxNLocator(max_ticks)
    bar.update_ticks()
    bar.set_label(label)
    bar.ax.tick_params(labelsize=7)
    return bar


def scale_bar(ax, length_um: float, color: str = "black", loc: str = "lower right"):
    """A scale bar of ``length_um`` (in the axes' data units, um) labelled in um; the
    image must be drawn with an extent in um."""
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    bar = AnchoredSizeBar(ax.transData, length_um, f"{length_um:g} {MICRON}", loc, pad=0.3, color=color,
                          frameon=False, size_vertical=length_um / 12, fontproperties=FontProperties(size=7))
    ax.add_artist(bar)
    return bar


def nice_length(span: float) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^n) near a quarter of ``span``."""
    if not span > 0:
        raise ValueError(f"span must be positive, got {span}")
    target = span / 4
    power = 10 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1, 2, 5) if m * power <= target))


def label_bars(ax, bars, fmt: str = "{:.3g}", unit: str = "") -> None:
    """Write each bar's value (and unit) on top of it."""
    separator = "" if unit == DEGREE else " "
    ax.bar_label(bars, labels=[fmt.format(b.get_height()) + (separator + unit if unit else "") for b in bars],
                 fontsize=7, padding=2)
    ax.margins(y=0.15)


def direction_segments(current: Sequence[float]) -> list[tuple[slice, bool]]:
    """Consecutive stretches of one sign of ``current``: (slice, is_charge) pairs, where
    charge is current > 0 (rests join the stretch before them). Neighbouring stretches
    share their boundary point, so the drawn line stays continuous."""
    sign = np.sign(np.asarray(current, dtype=float))
    for i in range(sign.size):  # a rest (or NaN) carries the direction before it
        if not sign[i] > 0 and not sign[i] < 0:
            sign[i] = sign[i - 1] if i else 1.0
    segments, start = [], 0
    for i in range(1, sign.size + 1):
        if i == sign.size or sign[i] != sign[start]:
            segments.append((slice(max(start - 1, 0) if segments else start, i), bool(sign[start] > 0)))
            start = i
    return segments


def plot_by_direction(ax, x, y, current, color, label: str = "", **kwargs) -> None:
    """Plot y against x in ``color``: charge solid (`CHARGE`), discharge dashed
    (`DISCHARGE`); ``label`` is given to the first stretch only."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    for n, (part, charge) in enumerate(direction_segments(current)):
        ax.plot(x[part], y[part], color=color, label=label if n == 0 else None,
                **(CHARGE if charge else DISCHARGE), **kwargs)


def direction_legend(ax, **kwargs):
    """A legend entry pair explaining solid = charge, dashed = discharge."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.3", **CHARGE, label="charge"),
               Line2D([], [], color="0.3", **DISCHARGE, label="discharge")]
    return ax.legend(handles=handles, **kwargs)


def save_figure(fig, stem: Path | str, dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``stem.png`` (``dpi``) and ``stem.svg``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=dpi)
    fig.savefig(paths[1])
    return paths
