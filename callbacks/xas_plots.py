"""Figures of ex situ XAS: normalised XANES, |chi(R)| and the first-shell fit per sample.

`xas_result` reads a stored ``xas`` derived run into plain arrays and numbers;
`comparison_figure` puts several samples (e.g. SC-NC91 and SC-NM91, pristine / charged /
discharged / cycled) side by side: the normalised Ni K edge, |chi(R)| (k^2-weighted),
and the Ni-O R and sigma^2 with their standard errors, values on the bars. Computing
never depends on plotting; the look is `figure_style`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .figure_style import ANGSTROM, INV_ANGSTROM, journal_style, label_bars

#: energy window of the XANES panel, eV
XANES_WINDOW_EV = (8320.0, 8380.0)
#: R window of the |chi(R)| panel, A
R_WINDOW_A = (0.0, 4.0)
FIT_KEYS = ("e0_eV", "edge_shift_eV", "r_A", "r_err_A", "sigma2_A2", "sigma2_err_A2", "delta_e0_eV", "r_factor")


def xas_result(derived) -> dict[str, Any]:
    """The arrays and fit numbers of an ``xas`` derived run (a Tiled BlueskyRun)."""
    spectrum, exafs, fit = derived["spectrum"], derived["exafs"], derived["fit"]
    result = {key: float(fit[key].read()[0]) for key in FIT_KEYS}
    for stream, keys in ((spectrum, ("energy_eV", "norm")), (exafs, ("r_A", "chir_mag"))):
        for key in keys:
            result[f"{key}_array" if key == "r_A" else key] = np.asarray(stream[key].read()[0])
    return result


def comparison_figure(results: Mapping[str, Mapping[str, Any]], title: str = "Ni K-edge XAS"):
    """One figure: normalised XANES and |chi(R)| of every sample (label -> `xas_result`),
    and bars of the Ni-O R (A) and sigma^2 (10^-3 A^2) with their standard errors."""
    with journal_style():
        fig, axes = plt.subplots(2, 2, figsize=(8.5, 6.2), layout="constrained")
        (ax_xanes, ax_r), (ax_bond, ax_sigma) = axes
        labels = list(results)
        for label, result in results.items():
            ax_xanes.plot(result["energy_eV"], result["norm"], label=label)
            ax_r.plot(result["r_A_array"], result["chir_mag"], label=label)
        ax_xanes.set(xlim=XANES_WINDOW_EV, xlabel="E (eV)", ylabel="normalised μ(E)", title="Ni K edge")
        ax_r.set(xlim=R_WINDOW_A, xlabel=f"R ({ANGSTROM}, no phase correction)", ylabel=f"|χ(R)| ({ANGSTROM}⁻³)",
                 title=f"Fourier transform, k², 3–12.8 {INV_ANGSTROM}")
        ax_xanes.legend(fontsize=6)
        positions = np.arange(len(labels))
        for axis, key, name, unit, scale, fmt in (
            (ax_bond, "r_A", "Ni–O R", ANGSTROM, 1.0, "{:.3f}"),
            (ax_sigma, "sigma2_A2", "σ²", f"10⁻³ {ANGSTROM}²", 1e3, "{:.2f}"),
        ):
            values = [results[label][key] * scale for label in labels]
            errors = [results[label][key.replace("_A", "_err_A", 1)] * scale for label in labels]
            bars = axis.bar(positions, values, yerr=errors, capsize=3, color="C0")
            label_bars(axis, bars, fmt)
            axis.set_xticks(positions, labels, rotation=30, ha="right")
            low = min(v - e for v, e in zip(values, errors, strict=True))
            high = max(v + e for v, e in zip(values, errors, strict=True))
            axis.set_ylim(low - 0.2 * (high - low), high + 0.3 * (high - low))
            axis.set(ylabel=f"{name} ({unit})")
        ax_bond.set_title("first-shell fit: N = 6, S₀² = 0.8")
        fig.suptitle(title)
    return fig
