"""The operando XRD live reduction on frames with known lattice, phases and widths."""

from __future__ import annotations

import json

import numpy as np
import pytest
from event_model import DocumentNames, compose_run, schema_validators

from nanostrain.analysis.xrd import al_reflections, perkinelmer_geometry, pixel_q, pseudo_voigt, r3m_reflections
from nanostrain.analysis.xrd_reduction import XrdReducer, reduction_integrator
from nanostrain.callbacks.xrd import XrdCallback

WAVELENGTH_A = 0.1665


def small_geometry():
    """The PerkinElmer 2048 x 2048 panel at 1.5 m, 0.1665 A (11-ID-C): Q up to ~5 1/A
    at the panel edge, ~0.005 1/A per pixel."""
    return perkinelmer_geometry(1.5, WAVELENGTH_A)


def pattern(q, phases, fwhm=0.012, al=True, eta=0.5, strain_eps=0.0):
    """I(Q): R-3m lines of each (a, c, weight) phase, Al lines, flat background.

    Line width: fwhm + 2 strain_eps Q (1/A), the Williamson-Hall form in Q
    (dQ = 2 pi K / D + 2 eps Q)."""
    out = np.full_like(q, 20.0)
    for a, c, weight in phases:
        for line in r3m_reflections(a, c, (0.5, 5.5)):
            strength = 4000.0 if line.hkl == (0, 0, 3) else 800.0
            width = fwhm + 2 * strain_eps * line.q
            out += weight * pseudo_voigt(q, line.q, width, eta, strength * width)
    if al:
        for line in al_reflections((0.5, 5.5)):
            out += pseudo_voigt(q, line.q, fwhm, 0.5, 300 * fwhm)
    return out


def frame(ai, phases, rng, **kwargs):
    q_pix = pixel_q(ai)
    grid = np.linspace(0.3, 6.0, 20000)
    return rng.poisson(np.interp(q_pix, grid, pattern(grid, phases, **kwargs))).astype(np.uint32)


def run_frames(frames, reference=None):
    ai = small_geometry()
    md = {"technique": "xrd", "image_key": "xrd", "xrd_geometry": ai.get_config(),
          "echem_keys": {"potential_V": "cycler-potential"}, "active_mass_g": 6.16e-3}
    if reference:
        md["xrd_reference"] = reference
    bundle = compose_run(metadata=md)
    desc = bundle.compose_descriptor(name="primary", data_keys={"cycler-potential": {"dtype": "number", "shape": [], "source": "x"}})

    class Frames:
        def iter_frames(self, stream, resource, datum):
            yield datum["seq_nums"]["start"], frames[datum["seq_nums"]["start"] - 1]

    callback = XrdCallback(frame_source=Frames())
    out = []
    callback.subscribe(lambda name, doc: out.append((name, doc)))
    callback("start", bundle.start_doc)
    callback("descriptor", desc.descriptor_doc)
    callback("stream_resource", {"uid": "r", "data_key": "xrd"})
    for i in range(1, len(frames) + 1):
        callback("stream_datum", {"stream_resource": "r", "descriptor": desc.descriptor_doc["uid"],
                                  "seq_nums": {"start": i, "stop": i + 1}, "indices": {"start": i - 1, "stop": i}})
        callback("event", desc.compose_event(data={"cycler-potential": 3.5 + 0.1 * i}, timestamps={"cycler-potential": 0}))
    callback("stop", bundle.compose_stop())
    rows = [doc["data"] for name, doc in out if name == "event" and "c_A" in doc["data"]]
    return callback, out, rows


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(3)


def test_lattice_parameters_are_recovered_from_a_single_phase_frame(rng):
    ai = small_geometry()
    _, _, rows = run_frames([frame(ai, [(2.870, 14.20, 1.0)], rng)])
    (row,) = rows
    assert row["n_phases"] == 1
    assert row["c_A"] == pytest.approx(14.20, abs=0.01)
    assert row["a_A"] == pytest.approx(2.870, abs=0.003)
    assert row["n_reflections"] >= 3
    assert row["potential_V"] == pytest.approx(3.6)


def test_coexisting_h2_and_h3_are_resolved_with_their_separation(rng):
    ai = small_geometry()
    _, _, rows = run_frames([frame(ai, [(2.82, 14.40, 0.6), (2.82, 13.90, 0.4)], rng)])
    (row,) = rows
    assert row["n_phases"] == 2
    assert row["c_phase1"] == pytest.approx(14.40, abs=0.02)
    assert row["c_phase2"] == pytest.approx(13.90, abs=0.02)
    assert row["phase_separation_A"] == pytest.approx(0.50, abs=0.03)
    assert row["fraction_phase2"] == pytest.approx(0.4, abs=0.05)


def test_strain_is_relative_to_the_first_frame_and_live_values_follow(rng):
    ai = small_geometry()
    frames = [frame(ai, [(2.870, 14.20, 1.0)], rng), frame(ai, [(2.850, 14.40, 1.0)], rng)]
    callback, out, rows = run_frames(frames)
    assert rows[0]["strain_c"] == 0.0
    assert rows[1]["strain_c"] == pytest.approx(14.40 / 14.20 - 1, abs=8e-4)
    assert rows[1]["strain_a"] == pytest.approx(2.850 / 2.870 - 1, abs=1.2e-3)
    assert callback.signals["c_A"]._connector.backend.reading["value"] == pytest.approx(14.40, abs=0.01)


def test_derived_documents_validate_and_carry_the_reduced_patterns(rng):
    ai = small_geometry()
    _, out, _ = run_frames([frame(ai, [(2.87, 14.2, 1.0)], rng)] * 2)
    for name, doc in out:
        schema_validators[DocumentNames(name)].validate(doc)
    streams = {doc["uid"]: doc["name"] for name, doc in out if name == "descriptor"}
    counts = {}
    for name, doc in out:
        if name == "event":
            counts[streams[doc["descriptor"]]] = counts.get(streams[doc["descriptor"]], 0) + 1
    assert counts == {"reduction": 1, "frame_quality": 2, "xrd": 2, "patterns": 2}


def test_williamson_hall_recovers_size_and_microstrain(rng):
    """Lorentzian lines of width 2 pi K / D + 2 eps Q with D = 942 A, eps = 1.5e-3."""
    ai = small_geometry()
    size_A, eps = 942.0, 1.5e-3
    fwhm0 = 2 * np.pi * 0.9 / size_A
    _, _, rows = run_frames([frame(ai, [(2.87, 14.2, 1.0)], rng, fwhm=fwhm0, eta=1.0, strain_eps=eps)])
    assert rows[0]["microstrain"] == pytest.approx(eps, rel=0.05)
    assert rows[0]["size_A"] == pytest.approx(size_A, rel=0.1)


def test_a_run_without_geometry_is_refused():
    bundle = compose_run(metadata={"technique": "xrd", "image_key": "xrd"})
    with pytest.raises(ValueError, match="xrd_geometry"):
        XrdCallback()("start", bundle.start_doc)


def test_live_plot_draws_the_operando_figure_from_the_derived_documents(rng):
    import matplotlib

    matplotlib.use("Agg")
    from nanostrain.callbacks.xrd_plots import XrdLivePlot

    ai = small_geometry()
    frames = [frame(ai, [(2.87 - 0.01 * i, 14.2 + 0.05 * i, 1.0)], rng) for i in range(3)]
    _, out, rows = run_frames(frames)
    plot = XrdLivePlot(redraw_every=2)
    for name, doc in out:
        plot(name, doc)
    axes = plot.figure.axes
    assert len(axes) == 5  # (003) map against time, voltage, lattice, anisotropy; the map's colorbar
    assert axes[0].collections and axes[0].get_ylabel() == "time (h)", "the (003) map is drawn against time"
    assert axes[4].get_xlabel() == "intensity (a.u.)"
    anisotropy = axes[3].lines[0]  # c/c0 against (a/a0)^2
    assert np.allclose(anisotropy.get_ydata(), [r["c_A"] / rows[0]["c_A"] for r in rows])
    assert np.allclose(anisotropy.get_xdata(), [(r["a_A"] / rows[0]["a_A"]) ** 2 for r in rows])


def test_published_rows_are_the_reducers_results(rng):
    """The callback routes: its ``xrd`` rows are `XrdReducer.add` of the same frames
    (plus the raw seq_num and the electrochemistry), its patterns the reducer's I(Q)."""
    ai = small_geometry()
    frames = [frame(ai, [(2.870, 14.20, 1.0)], rng), frame(ai, [(2.860, 14.30, 1.0)], rng)]
    callback, out, rows = run_frames(frames)
    reducer = XrdReducer(reduction_integrator(ai))
    expected = [reducer.add(f) for f in frames]
    for seq_num, (row, result) in enumerate(zip(rows, expected), start=1):
        expected_row = {"raw_seq_num": seq_num, "potential_V": 3.5 + 0.1 * seq_num, **result.scalars(),
                        "size_note": result.size_note}
        assert list(row) == list(expected_row)
        np.testing.assert_array_equal([row[k] for k in row if k != "size_note"],
                                      [expected_row[k] for k in row if k != "size_note"])
        assert row["size_note"] == result.size_note
    patterns = [doc["data"]["intensity"] for name, doc in out if name == "event" and "intensity" in doc["data"]]
    np.testing.assert_array_equal(patterns, [np.nan_to_num(r.intensity) for r in expected])
    assert callback.signals["lattice_change_A"]._connector.backend.reading["value"] == expected[1].lattice_change_A


def test_parameters_rebuild_the_same_analysis():
    """parameters() are JSON constructor arguments: XrdCallback(**parameters) is the same
    analysis, and a changed (003) window reaches the reduction."""
    callback = XrdCallback(npt=900, q_max=4.5, instrument_fwhm_deg=0.003, q003_window=(1.25, 1.45), image_key="xrd")
    parameters = json.loads(json.dumps(callback.parameters()))
    assert parameters == callback.parameters()
    rebuilt = XrdCallback(**parameters)
    assert rebuilt.parameters() == parameters
    assert set(parameters) == {"npt", "q_max", "instrument_fwhm_deg", "q003_window", "image_key", "stream"}
    md = {"technique": "xrd", "image_key": "xrd", "xrd_geometry": small_geometry().get_config(),
          "echem_keys": {}, "active_mass_g": 6.16e-3}
    rebuilt("start", compose_run(metadata=md).start_doc)
    assert rebuilt.reducer.q003_window == (1.25, 1.45)
    assert rebuilt.reducer.q_max == 4.5 and rebuilt.reducer.integrator.npt == 900


def test_bad_frames_are_skipped_with_reasons_and_the_good_ones_reduced(rng):
    ai = small_geometry()
    good = frame(ai, [(2.87, 14.2, 1.0)], rng)
    frames = [good, np.full(good.shape, np.nan), good, np.zeros_like(good), np.ones((16, 16), dtype=np.uint32), good]
    _, out, rows = run_frames(frames)
    quality = [doc["data"] for name, doc in out if name == "event" and "quality_status" in doc["data"]]
    assert [q["quality_status"] for q in quality] == ["ok", "bad", "ok", "no_signal", "bad", "ok"]
    assert [q["reduced"] for q in quality] == [True, False, True, False, False, True]
    assert quality[1]["reason"].startswith("100.0% of the pixels masked") and quality[1]["n_nonfinite"] == good.size
    assert quality[3]["reason"].startswith("no signal")
    assert quality[4]["reason"] == f"wrong shape (16, 16), the detector is {good.shape}"
    # the good frames are reduced; the empty one is NaN, not a fit; the bad ones are skipped
    assert [row["raw_seq_num"] for row in rows] == [1, 3, 4, 6]
    for row in (rows[0], rows[1], rows[3]):
        assert row["c_A"] == pytest.approx(14.2, abs=0.01) and row["n_phases"] == 1
    assert np.isnan(rows[2]["c_A"]) and np.isnan(rows[2]["a_A"]) and rows[2]["n_phases"] == 0
    assert rows[3]["lattice_change_A"] == pytest.approx(0.0, abs=1e-3)  # against frame 3, not the empty one
    (stop,) = [doc for name, doc in out if name == "stop"]
    assert stop["exit_status"] == "success"


def test_a_few_bad_pixels_are_masked_and_the_frame_still_reduced(rng):
    ai = small_geometry()
    good = frame(ai, [(2.87, 14.2, 1.0)], rng).astype(np.float64)
    spoiled = good.copy()
    spoiled[::97, ::89] = np.nan
    _, out, rows = run_frames([good, spoiled])
    quality = [doc["data"] for name, doc in out if name == "event" and "quality_status" in doc["data"]]
    assert quality[1]["quality_status"] == "ok" and quality[1]["n_nonfinite"] == spoiled[::97, ::89].size
    assert rows[1]["c_A"] == pytest.approx(rows[0]["c_A"], abs=1e-3)
