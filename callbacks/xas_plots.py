"""Figures of ex situ XAS: normalised XANES, |chi(R)| and the first-shell fit per sample.

`xas_result` reads a stored ``xas`` derived run into plain arrays and numbers;
`comparison_figure` puts several samples (e.g. SC-NC91 and SC-NM91, pristine / charged /
discharged / cycled) side by side: the normalised Ni K edge, |chi(R)| (k^2-weighted),
and the Ni-O R and sigma^2 with their standard errors. Computing never depends on
plotting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

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
    and bars of the Ni-O R and sigma^2 with their standard errors."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), layout="constrained")
    (ax_xanes, ax_r), (ax_bond, ax_sigma) = axes
    labels = list(results)
    for label, result in results.items():
        ax_xanes.plot(result["energy_eV"], result["norm"], label=label)
        ax_r.plot(result["r_A_array"], result["chir_mag"], label=label)
    ax_xanes.set(xlim=XANES_WINDOW_EV, xlabel="E (eV)", ylabel="normalised mu(E)", title="Ni K edge")
    ax_r.set(xlim=R_WINDOW_A, xlabel="R (A, no phase correction)", ylabel="|chi(R)| (A^-3)",
             title="Fourier transform, k^2, 3-12.8 1/A")
    ax_xanes.legend(fontsize=7)
    positions = np.arange(len(labels))
    for axis, key, unit, scale in ((ax_bond, "r_A", "A", 1.0), (ax_sigma, "sigma2_A2", "10^-3 A^2", 1e3)):
        values = [results[label][key] * scale for label in labels]
        errors = [results[label][key.replace("_A", "_err_A", 1)] * scale for label in labels]
        axis.bar(positions, values, yerr=errors, capsize=3, color="tab:blue")
        axis.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
        low = min(v - e for v, e in zip(values, errors, strict=True))
        high = max(v + e for v, e in zip(values, errors, strict=True))
        axis.set_ylim(low - 0.2 * (high - low), high + 0.2 * (high - low))
        axis.set(ylabel=f"{'Ni-O R' if key == 'r_A' else 'sigma^2'} ({unit})")
    ax_bond.set_title("first-shell fit: N = 6, S0^2 = 0.8")
    fig.suptitle(title)
    return fig
