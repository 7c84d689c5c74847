"""Figures as a journal prints them: units, colorbars, time axes, shared colour scales,
charge/discharge styles, scale bars, values on bars, PNG and SVG files.

Known-answer inputs: the tests build the data the plotting functions draw and check
what the figure holds (axes labels, colour limits, artists), not how it looks.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar  # noqa: E402

from nanostrain.callbacks import sxdm_plots, txm_plots, xas_plots, xrd_plots  # noqa: E402
from nanostrain.callbacks.figure_style import (  # noqa: E402
    direction_segments,
    nice_length,
    robust_limits,
    save_figure,
    symmetric_limit,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _colorbar_labels(fig) -> list[str]:
    return [ax.get_ylabel() or ax.get_xlabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


# --- style helpers -------------------------------------------------------------------

def test_robust_limits_span_the_percentiles_of_all_images_together():
    first, second = np.arange(0.0, 50.0), np.arange(50.0, 101.0)
    second_masked = np.ma.masked_greater(np.append(second, 1e6), 1e5)  # a masked hot voxel is ignored

    assert robust_limits([first, second_masked], (0.0, 100.0)) == (0.0, 100.0)
    assert robust_limits([first, second], (10.0, 90.0)) == pytest.approx((10.0, 90.0))


def test_symmetric_limit_is_the_percentile_of_magnitudes_over_all_panels():
    assert symmetric_limit([np.array([-4.0, 1.0]), np.array([2.0, np.nan])], 100.0) == 4.0
    assert symmetric_limit([np.zeros(3)]) == 1.0


def test_direction_segments_split_charge_and_discharge_and_join_them():
    current = [1.0, 1.0, 0.0, -1.0, -1.0, 1.0]  # charge, rest, discharge, charge

    segments = direction_segments(current)

    assert [(part.start, part.stop, charge) for part, charge in segments] == [
        (0, 3, True), (2, 5, False), (4, 6, True)]


@pytest.mark.parametrize(("span", "length"), [(6.0, 1.0), (1.0, 0.2), (0.5, 0.1), (30.0, 5.0), (0.8, 0.2)])
def test_scale_bar_lengths_are_round(span, length):
    assert nice_length(span) == pytest.approx(length)


def test_nice_length_refuses_an_empty_span():
    with pytest.raises(ValueError, match="span"):
        nice_length(0.0)


def test_figures_are_saved_as_png_and_svg(tmp_path):
    fig, ax = plt.subplots()
    ax.set_xlabel("Q (Å⁻¹)")

    png, svg = save_figure(fig, tmp_path / "sub" / "figure")

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text and "Å⁻¹" in text  # text stays text in the vector file


# --- operando XRD --------------------------------------------------------------------

def _operando(n: int = 20):
    """Charge then discharge, frames unevenly spaced in time: dense at top of charge."""
    half = n // 2
    step_time = np.concatenate([np.sqrt(np.linspace(0, 1, half)) * 3600, np.linspace(0, 3600, n - half)])
    step = np.repeat([0, 1], [half, n - half])
    shape = np.sin(np.linspace(0, np.pi, n))
    c, a = 14.2 - 0.6 * shape, 2.87 - 0.03 * shape
    table = {"potential_V": 3.6 + 0.9 * shape, "current_mA": np.where(step == 0, 1.0, -1.0), "step_time_s": step_time,
             "step_index": step, "a_A": a, "c_A": c, "volume_A3": np.sqrt(3) / 2 * a**2 * c}
    q = np.linspace(1.2, 1.5, 150)
    patterns = np.exp(-(((q[None, :] - 6 * np.pi / c[:, None]) / 0.005) ** 2))
    return table, q, patterns


def test_frame_times_come_from_the_cycler_clock_with_step_offsets():
    table = {"step_time_s": np.array([0.0, 1800.0, 600.0]), "step_index": np.array([0, 0, 1])}
    echem = {"step_time_s": np.array([0.0, 1800.0, 3600.0, 0.0, 600.0, 900.0]),
             "step_index": np.array([0, 0, 0, 1, 1, 1])}

    assert xrd_plots.frame_times_h(table, echem) == pytest.approx([0.0, 0.5, 1 + 600 / 3600])
    # without the cycler's full record the step ends where its last frame was taken
    assert xrd_plots.frame_times_h(table) == pytest.approx([0.0, 0.5, 0.5 + 600 / 3600])


def test_operando_map_is_drawn_against_time_with_an_intensity_colorbar():
    table, q, patterns = _operando()

    fig = xrd_plots.operando_figure(table, q, patterns)

    ax_map, ax_v = fig.axes[0], fig.axes[1]
    assert ax_map.get_ylabel() == "time (h)"
    assert ax_map.get_xlabel() == "Q (Å⁻¹)"
    assert ax_map.get_ylim() == pytest.approx(ax_v.get_ylim())
    times = xrd_plots.frame_times_h(table)
    assert min(ax_map.get_ylim()) <= times.min() and max(ax_map.get_ylim()) >= times.max()
    assert "intensity (a.u.)" in _colorbar_labels(fig)
    assert ax_v.get_xlabel() == "E (V vs Li/Li⁺)"


def test_a_beam_gap_is_left_blank_in_the_map():
    times = np.array([0.0, 0.1, 0.2, 0.3, 2.0, 2.1])
    patterns = np.ones((6, 4))

    gapped_times, gapped = xrd_plots._with_gaps(times, patterns)

    assert gapped_times.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3, 1.15, 2.0, 2.1])
    assert np.isnan(gapped[4]).all() and np.isfinite(np.delete(gapped, 4, axis=0)).all()


def test_charge_is_solid_and_discharge_dashed():
    table, q, patterns = _operando()

    fig = xrd_plots.operando_figure(table, q, patterns)

    ax_aniso = fig.axes[3]
    styles = {line.get_linestyle() for line in ax_aniso.get_lines()}
    assert styles == {"-", "--"}
    assert [t.get_text() for t in ax_aniso.get_legend().get_texts()] == ["charge", "discharge"]
    assert ax_aniso.get_xlabel() == "(a/a₀)²"


def test_xrd_comparison_bars_carry_their_values_and_units():
    table, _, _ = _operando()
    runs = {"PC-NC91": {"table": table, "c_contraction_pct": 6.0, "volume_shrinkage_pct": 7.8, "max_dc_A": 0.0},
            "PC-NM91": {"table": table, "c_contraction_pct": 3.6, "volume_shrinkage_pct": 5.9, "max_dc_A": 0.68}}

    fig = xrd_plots.comparison_figure(runs)

    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"6.0 %", "3.6 %", "7.8 %", "5.9 %", "0.68 Å", "0.00 Å"} <= texts
    assert "Å" in fig.axes[2].get_ylabel() and "%" in fig.axes[1].get_ylabel()


# --- SXDM ----------------------------------------------------------------------------

def _particles():
    rng = np.random.default_rng(0)
    mask = np.ones((8, 8), np.uint8)
    return {label: {"dd_over_d": rng.normal(0, s, (8, 8)), "theta_xy": rng.normal(0, 10 * s, (8, 8)),
                    "theta_xz": rng.normal(0, 10 * s, (8, 8)), "mask": mask, "sigma_dd_over_d": s,
                    "sigma_theta_xy_deg": 10 * s, "sigma_theta_xz_deg": 10 * s}
            for label, s in (("SC-NC91", 5e-4), ("SC-NM91", 2e-3))}


def test_sxdm_panels_of_one_quantity_share_one_symmetric_scale():
    maps = _particles()

    fig = sxdm_plots.maps_figure(maps, step_um=0.05)

    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 6
    for column, name in enumerate(("dd_over_d", "theta_xy", "theta_xz")):
        first, second = images[column], images[3 + column]  # row-major: NC91 row, then NM91 row
        assert first.get_clim() == second.get_clim()
        scale = 1e3 if name == "dd_over_d" else 1.0
        limit = np.percentile(np.abs(np.concatenate([m[name].ravel() for m in maps.values()])) * scale, 99)
        assert first.get_clim() == pytest.approx((-limit, limit))


def test_sxdm_colorbars_name_their_units_and_images_carry_scale_bars():
    fig = sxdm_plots.maps_figure(_particles(), step_um=0.05)

    assert _colorbar_labels(fig) == ["Δd/d (10⁻³)", "θ_xy (°)", "θ_xz (°)"]
    bars = [artist for ax in fig.axes for artist in ax.artists if isinstance(artist, AnchoredSizeBar)]
    assert len(bars) == 6
    assert bars[0].txt_label.get_text() == "0.1 µm"  # 8 px x 50 nm = 0.4 um across


def test_sigma_bars_show_their_values():
    fig = sxdm_plots.sigma_figure(_particles())

    assert [t.get_text() for t in fig.axes[0].texts] == ["0.5", "2"]  # in 10^-3, as the axis says
    assert [t.get_text() for t in fig.axes[1].texts] == ["0.005°", "0.02°"]
    assert fig.axes[0].get_ylabel() == "σ(Δd/d) (10⁻³)"
    assert fig.axes[1].get_ylabel() == "σ(θ_xy) (°)"


# --- TXM-XANES -----------------------------------------------------------------------

def test_txm_particles_share_a_robust_colour_scale_that_does_not_saturate():
    rng = np.random.default_rng(1)
    results = {}
    for label, sigma in (("SC-NC91", 0.2), ("SC-NM91", 0.8)):
        wl = rng.normal(8350.0, sigma, (10, 10, 10))
        wl[0, 0, 0] = 9000.0  # one hot voxel must not stretch the scale
        counts, edges = np.histogram(wl, bins=40, range=(8346, 8354))
        results[label] = {"wl_eV": wl, "counts": counts, "bin_edges_eV": edges, "sigma_eV": sigma, "voxel_um": 0.04}

    fig = txm_plots.comparison_figure(results)

    clims = {ax.images[0].get_clim() for ax in fig.axes if ax.images}
    assert len(clims) == 1
    everything = np.concatenate([r["wl_eV"].ravel() for r in results.values()])
    assert clims.pop() == pytest.approx(tuple(np.percentile(everything, txm_plots.PERCENTILES)))
    assert _colorbar_labels(fig) == ["white-line energy (eV)"]
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert legend == ["SC-NC91: σ = 0.200 eV", "SC-NM91: σ = 0.800 eV"]
    bars = [a for ax in fig.axes for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 6 and bars[0].txt_label.get_text() == "0.1 µm"


def test_the_histogram_axis_spans_the_occupied_bins_only():
    edges = np.linspace(8340.0, 8360.0, 21)  # 1 eV bins
    counts = np.zeros(20)
    counts[9:11] = 50  # voxels between 8349 and 8351 eV
    result = {"wl_eV": np.full((4, 4), 8350.0), "counts": counts, "bin_edges_eV": edges, "sigma_eV": 0.5}

    fig = txm_plots.comparison_figure({"particle": result})

    ax_hist = next(ax for ax in fig.axes if ax.get_legend())
    assert ax_hist.get_xlim() == pytest.approx((8348.8, 8351.2))


# --- XAS -----------------------------------------------------------------------------

def test_xas_bars_carry_values_and_units_in_angstrom():
    energy, r = np.linspace(8300.0, 8400.0, 50), np.linspace(0.0, 6.0, 30)
    results = {label: {"energy_eV": energy, "norm": np.tanh(energy - 8345.0), "r_A_array": r, "chir_mag": np.exp(-r),
                       "r_A": r_A, "r_err_A": 0.01, "sigma2_A2": s2, "sigma2_err_A2": 3e-4}
               for label, r_A, s2 in (("SC-NC91 pristine", 1.95, 5e-3), ("SC-NM91 cycled", 1.93, 7.5e-3))}

    fig = xas_plots.comparison_figure(results)

    ax_bond, ax_sigma = fig.axes[2], fig.axes[3]
    assert ax_bond.get_ylabel() == "Ni–O R (Å)" and ax_sigma.get_ylabel() == "σ² (10⁻³ Å²)"
    assert [t.get_text() for t in ax_bond.texts] == ["1.950", "1.930"]
    assert [t.get_text() for t in ax_sigma.texts] == ["5.00", "7.50"]
    assert fig.axes[1].get_xlabel() == "R (Å, no phase correction)"
