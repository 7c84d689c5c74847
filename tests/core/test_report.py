"""The campaign report from a small catalog of synthetic runs with known numbers.

Raw cycling runs (an ``echem`` stream) and the derived runs the live analyses publish
(``xrd_reduction``, ``electrochemistry``, ``sxdm_strain``, ``txm_xanes``, with the same
streams and start documents, made by `callbacks.derived.DerivedRun`) are written by
bluesky-tiled-plugins' TiledWriter into a real catalog (the in-process Tiled app); the
report then reads the catalog alone. The synthetic numbers are the ground truth of the
headline table.
"""

from __future__ import annotations

import re

import event_model
import numpy as np
import pytest
from bluesky_tiled_plugins import TiledWriter

from nanostrain.callbacks.derived import DerivedRun
from nanostrain.cli import main
from nanostrain.report import Campaign, aged_retention, headlines, read_campaign, write_report

from ..conftest import API_KEY, in_process_client

ECHEM_KEYS = {"potential_V": "cyc_potential", "current_mA": "cyc_current", "step_time_s": "cyc_step_time",
              "step_index": "cyc_step_index", "cycle_index": "cyc_cycle_index"}
N = 12  # frames per operando run
SHAPE_MAX = float(np.sin(np.linspace(0, np.pi, N)).max())  # the c, a excursion of `_xrd_table`


def _raw_cycling_run(writer, sample: dict) -> dict:
    """A raw operando run: charge then discharge, 1 h each, the cycler read every 6 min."""
    bundle = event_model.compose_run(metadata={"technique": "xrd", "plan_name": "operando_xrd", "sample": sample,
                                               "echem_keys": ECHEM_KEYS})
    writer("start", bundle.start_doc)
    keys = {key: {"dtype": "number", "shape": [], "source": "sim"} for key in ECHEM_KEYS.values()}
    descriptor = bundle.compose_descriptor(name="echem", data_keys=keys)
    writer("descriptor", descriptor.descriptor_doc)
    for step in (0, 1):
        for t in np.linspace(0.0, 3600.0, 6):
            potential = 3.6 + 0.9 * t / 3600 if step == 0 else 4.5 - 1.5 * t / 3600
            data = {"cyc_potential": potential, "cyc_current": 1.0 if step == 0 else -1.0, "cyc_step_time": t,
                    "cyc_step_index": step, "cyc_cycle_index": 1}
            writer("event", descriptor.compose_event(data=data, timestamps={k: 0.0 for k in data}))
    writer("stop", bundle.compose_stop())
    return bundle.start_doc


def _xrd_table(c_drop_A: float, a_drop_A: float, dc_A: float) -> dict:
    """One cycle: c and a fall by the given amounts at top of charge and come back."""
    shape = np.sin(np.linspace(0, np.pi, N))
    step = (np.arange(N) >= N // 2).astype(int)
    c, a = 14.2 - c_drop_A * shape, 2.87 - a_drop_A * shape
    split = np.where(shape > 0.9, dc_A, 0.0)
    return {"potential_V": 3.6 + 0.9 * shape, "current_mA": np.where(step == 0, 1.0, -1.0),
            "step_time_s": np.tile(np.linspace(0, 3400, N // 2), 2),
            "step_index": step, "a_A": a, "c_A": c, "volume_A3": np.sqrt(3) / 2 * a**2 * c,
            "phase_separation_A": split, "n_phases": np.where(split > 0, 2, 1)}


def write_xrd_cell(client, morphology: str, composition: str, rate: float, c_drop_A: float, a_drop_A: float = 0.02,
                   dc_A: float = 0.0, retention: tuple[float, ...] = (100.0,)) -> None:
    sample = {"name": f"{morphology}-{composition}", "composition": composition, "morphology": morphology,
              "specific_current_mA_g": rate}
    raw_start = _raw_cycling_run(TiledWriter(client["raw"]), sample)
    writer = TiledWriter(client["derived"])
    derived = DerivedRun(writer, raw_start, "xrd_reduction", {})
    q = np.linspace(1.2, 1.5, 60)
    derived.event("reduction", {"q": q, "wavelength_A": 0.452})
    table = _xrd_table(c_drop_A, a_drop_A, dc_A)
    for i in range(N):
        derived.event("xrd", {key: values[i].item() for key, values in table.items()})
        d003 = table["c_A"][i] / 3
        derived.event("patterns", {"intensity": np.exp(-(((q - 2 * np.pi / d003) / 0.005) ** 2))})
    derived.stop()
    echem = DerivedRun(writer, raw_start, "electrochemistry", {})
    for cycle, value in enumerate(retention, 1):
        echem.event("cycles", {"cycle": cycle, "charge_mAh_g": 200.0, "discharge_mAh_g": 2 * value,
                               "coulombic_efficiency_pct": 99.0, "retention_pct": value})
    echem.stop()


def _raw_start(sample: dict, technique: str) -> dict:
    return event_model.compose_run(metadata={"technique": technique, "sample": sample}).start_doc


def write_cycle_cell(client, morphology: str, composition: str, cycles: int, discharge_mAh_g: float,
                     rate: float | None = 100.0) -> None:
    """One cycle of a cell aged ``cycles`` cycles (a `cycle_cell` run) and its
    electrochemistry; with ``rate`` None the sample does not name its specific current, the
    raw run's protocol (written to the catalog) does (100 mA/g)."""
    sample = {"name": f"{morphology}-{composition}", "composition": composition, "morphology": morphology,
              "cycles": cycles, **({"specific_current_mA_g": rate} if rate is not None else {})}
    protocol = [{"mode": mode, "rate_mA_g": 100.0, "v_min": 2.7, "v_max": 4.5, "duration_s": 0.0, "label": ""}
                for mode in ("CC_CHARGE", "CC_DISCHARGE")]
    bundle = event_model.compose_run(metadata={"technique": "electrochemistry", "plan_name": "cycle_cell",
                                               "sample": sample, "protocol": protocol})
    if rate is None:
        raw = TiledWriter(client["raw"])
        raw("start", bundle.start_doc)
        raw("stop", bundle.compose_stop())
    run = DerivedRun(TiledWriter(client["derived"]), bundle.start_doc, "electrochemistry", {})
    run.event("cycles", {"cycle": 0, "charge_mAh_g": discharge_mAh_g + 1.0, "discharge_mAh_g": discharge_mAh_g,
                         "coulombic_efficiency_pct": 99.5, "retention_pct": 100.0})
    run.stop()


def write_sxdm_particle(client, composition: str, cycles: int, sigma: float, seed: int) -> None:
    sample = {"name": f"SC-{composition} {cycles} cycles", "material": composition, "morphology": "SC", "cycles": cycles}
    rng = np.random.default_rng(seed)
    run = DerivedRun(TiledWriter(client["derived"]), _raw_start(sample, "sxdm"), "sxdm_strain", {})
    maps = {name: rng.normal(0.0, sigma * scale, (10, 10)) for name, scale in
            (("dd_over_d", 1.0), ("theta_xy", 20.0), ("theta_xz", 20.0))}
    run.event("maps", {**maps, "mask": np.ones((10, 10), np.uint8), "sigma_dd_over_d": sigma,
                       "sigma_theta_xy_deg": 20 * sigma, "sigma_theta_xz_deg": 20 * sigma})
    run.stop()


def write_txm_particle(client, composition: str, sigma_eV: float, seed: int) -> None:
    sample = {"name": f"charged SC-{composition}", "material": composition, "morphology": "SC"}
    wl = np.random.default_rng(seed).normal(8350.0, sigma_eV, (8, 8, 8))
    counts, edges = np.histogram(wl, bins=30)
    run = DerivedRun(TiledWriter(client["derived"]), _raw_start(sample, "txm"), "txm_xanes", {})
    run.event("whiteline", {"wl_eV": wl, "voxel_um": 0.04})
    run.event("statistics", {"counts": counts, "bin_edges_eV": edges, "wl_sigma_eV": sigma_eV, "n_voxels": wl.size})
    run.stop()


def write_xas_electrode(client, composition: str, state: str, cycles: int, sigma2_A2: float) -> None:
    sample = {"name": f"SC-{composition} {state}", "material": composition, "morphology": "SC", "state": state,
              "cycles": cycles}
    energy, r = np.linspace(8300.0, 8400.0, 50), np.linspace(0.0, 6.0, 30)
    run = DerivedRun(TiledWriter(client["derived"]), _raw_start(sample, "xas"), "xas", {})
    run.event("spectrum", {"energy_eV": energy, "norm": 1 / (1 + np.exp(-(energy - 8345.0)))})
    run.event("exafs", {"r_A": r, "chir_mag": np.exp(-((r - 1.6) ** 2))})
    run.event("fit", {"e0_eV": 8345.0, "edge_shift_eV": 1.0, "r_A": 1.95, "r_err_A": 0.01, "sigma2_A2": sigma2_A2,
                      "sigma2_err_A2": 3e-4, "delta_e0_eV": 0.5, "r_factor": 0.01})
    run.stop()


def write_study_campaign(client) -> None:
    """Every technique and sample, with the study's orderings (PC-NC91 c drop 0.85 A =
    6.0 %, PC-NM91 0.51 A = 3.6 %)."""
    write_xrd_cell(client, "SC", "NC91", 200.0, 0.6, retention=(100.0, 89.2))
    write_xrd_cell(client, "SC", "NM91", 200.0, 0.5, dc_A=0.6, retention=(100.0, 75.9))
    write_xrd_cell(client, "PC", "NC91", 100.0, 0.852, a_drop_A=0.03, retention=(100.0, 59.7))
    write_xrd_cell(client, "PC", "NM91", 100.0, 0.51, a_drop_A=0.02, retention=(100.0, 83.1))
    for cycles in (0, 100):
        write_sxdm_particle(client, "NC91", cycles, 5e-4, seed=1 + cycles)
        write_sxdm_particle(client, "NM91", cycles, 1.8e-3, seed=2 + cycles)
    write_txm_particle(client, "NC91", 0.3, seed=3)
    write_txm_particle(client, "NM91", 0.6, seed=4)
    for composition, rise in (("NC91", 0.5e-3), ("NM91", 1.5e-3)):  # NM91's disorder rises more
        write_xas_electrode(client, composition, "pristine", 0, 5e-3)
        write_xas_electrode(client, composition, "cycled", 100, 5e-3 + rise)


@pytest.fixture
def client(sqlite_settings):
    client = in_process_client(sqlite_settings)
    yield client
    client.context.close()


@pytest.fixture(scope="module")
def study_client(tmp_path_factory):
    """One catalog holding `write_study_campaign`, shared by the tests that only read it."""
    from nanostrain.catalog import CatalogSettings

    client = in_process_client(CatalogSettings(data_dir=tmp_path_factory.mktemp("study") / "data", api_key=API_KEY))
    write_study_campaign(client)
    yield client
    client.context.close()


@pytest.fixture(scope="module")
def study_campaign(study_client) -> Campaign:
    return read_campaign(study_client, say=lambda _: None)


@pytest.mark.slow
def test_campaign_reads_every_cell_and_particle_with_its_numbers(study_campaign):
    campaign = study_campaign

    assert [(c.morphology, c.composition, c.rate_mA_g) for c in campaign.xrd] == [
        ("PC", "NC91", 100.0), ("PC", "NM91", 100.0), ("SC", "NC91", 200.0), ("SC", "NM91", 200.0)]
    pc_nc91 = campaign.xrd[0]
    assert pc_nc91.c_contraction_pct == pytest.approx(100 * 0.852 * SHAPE_MAX / 14.2)
    assert pc_nc91.echem is not None and pc_nc91.echem["potential_V"].size == 12
    assert len(campaign.sxdm) == 4 and len(campaign.txm) == 2 and len(campaign.xas) == 4
    assert {(c.morphology, c.composition): c.retention_pct[-1] for c in campaign.cycling} == {
        ("SC", "NC91"): 89.2, ("SC", "NM91"): 75.9, ("PC", "NC91"): 59.7, ("PC", "NM91"): 83.1}


@pytest.mark.slow
def test_every_study_ordering_holds_on_a_campaign_built_to_follow_it(study_campaign):
    rows = headlines(study_campaign)

    assert len(rows) == 9
    assert [row.claim for row in rows if row.holds is not True] == []


@pytest.mark.slow
def test_a_false_ordering_is_flagged_false(client):
    write_xrd_cell(client, "PC", "NC91", 100.0, 0.852)
    write_xrd_cell(client, "PC", "NM91", 100.0, 1.0)  # contracts more than PC-NC91: not the study's order

    rows = {row.claim: row for row in headlines(read_campaign(client, say=lambda _: None))}

    row = rows["PC c contraction: PC-NC91 > PC-NM91"]
    assert row.holds is False
    assert row.measured == f"{100 * 0.852 * SHAPE_MAX / 14.2:.1f} % vs {100 * 1.0 * SHAPE_MAX / 14.2:.1f} %"
    assert rows["PC volume shrinkage: PC-NC91 > PC-NM91"].holds is False


@pytest.mark.slow
def test_retention_after_100_cycles_is_read_from_fresh_and_aged_runs_of_each_cell(client):
    """Discharge capacities (mAh/g) fresh and after 100 cycles; retention 100 Q_100 / Q_0:
    SC-NC91 89.2 %, SC-NM91 75.9 %, PC-NC91 59.7 %, PC-NM91 83.1 % (the study's); beside
    them runs that must not count: another rate, another age."""
    for morphology, composition, fresh, aged in (("SC", "NC91", 240.0, 214.08), ("SC", "NM91", 220.0, 166.98),
                                                 ("PC", "NC91", 250.0, 149.25), ("PC", "NM91", 200.0, 166.2)):
        write_cycle_cell(client, morphology, composition, 0, fresh, rate=None if morphology == "PC" else 100.0)
        write_cycle_cell(client, morphology, composition, 100, aged)
    write_cycle_cell(client, "SC", "NC91", 100, 100.0, rate=200.0)
    write_cycle_cell(client, "SC", "NC91", 50, 100.0)
    write_xrd_cell(client, "SC", "NC91", 200.0, 0.6, retention=(100.0, 50.0))  # within a run: the pair wins

    campaign = read_campaign(client, say=lambda _: None)

    assert aged_retention(campaign, "PC", "NC91") == pytest.approx(59.7)
    assert aged_retention(campaign, "SC", "NC91", cycles=50) == pytest.approx(100 * 100.0 / 240.0)
    assert aged_retention(campaign, "SC", "NM91", rate_mA_g=200.0) is None
    rows = {row.claim: row for row in headlines(campaign)}
    claim = "capacity retention, 100 cycles at 100 mA/g: {}"
    sc, pc = rows[claim.format("SC-NC91 > SC-NM91")], rows[claim.format("PC-NM91 > PC-NC91")]
    assert (sc.holds, sc.measured) == (True, "89.2 % vs 75.9 % (Q after 100 cycles / Q fresh, 100 mA/g)")
    assert (pc.holds, pc.measured) == (True, "83.1 % vs 59.7 % (Q after 100 cycles / Q fresh, 100 mA/g)")
    assert sc.study == "89.2 % vs 75.9 %"


@pytest.mark.slow
def test_a_retention_against_the_study_is_flagged_false(client):
    for composition, fresh, aged in (("NC91", 240.0, 150.0), ("NM91", 220.0, 200.0)):  # 62.5 % < 90.9 %
        write_cycle_cell(client, "SC", composition, 0, fresh)
        write_cycle_cell(client, "SC", composition, 100, aged)

    rows = {row.claim: row for row in headlines(read_campaign(client, say=lambda _: None))}

    row = rows["capacity retention, 100 cycles at 100 mA/g: SC-NC91 > SC-NM91"]
    assert (row.holds, row.measured) == (False, "62.5 % vs 90.9 % (Q after 100 cycles / Q fresh, 100 mA/g)")
    assert rows["capacity retention, 100 cycles at 100 mA/g: PC-NM91 > PC-NC91"].holds is None


@pytest.mark.slow
def test_report_has_every_section_and_figure_files(study_client, tmp_path):
    said = []

    path, rows = write_report(study_client, tmp_path / "out" / "campaign.html", say=said.append)

    page = path.read_text(encoding="utf-8")
    for section in ("headlines", "xrd", "sxdm", "txm", "xas", "missing"):
        assert f'id="{section}"' in page
    figures = sorted(p.name for p in (tmp_path / "out" / "campaign_figures").iterdir())
    stems = {name.rsplit(".", 1)[0] for name in figures}
    assert {"xrd_comparison", "sxdm_maps", "sxdm_sigma", "txm_whiteline", "xas"} <= stems
    assert all(f"{stem}.png" in figures and f"{stem}.svg" in figures for stem in stems)
    assert len(stems) == 5 + 4  # and one operando figure per cell
    assert page.count('<img src="data:image/png;base64,') == len(stems)
    assert page.count('<td class="yes">') == len(rows) == 9
    assert sum("report: reading" in line for line in said) == 4 + 4 + 4 + 2 + 4  # XRD, its echem, SXDM, TXM, XAS
    assert "Every technique and sample of the comparison is present." in page


@pytest.mark.slow
def test_what_the_catalog_lacks_is_stated_not_a_crash(client, tmp_path):
    write_txm_particle(client, "NM91", 0.6, seed=4)

    path, rows = write_report(client, tmp_path / "report.html", say=lambda _: None)

    page = path.read_text(encoding="utf-8")
    assert "No Operando XRD runs in this catalog." in page
    assert "SXDM: no runs in the catalog" in page
    assert "TXM-XANES: no SC-NC91 sample" in page
    assert "XAS: no runs in the catalog" in page
    assert "operando XRD: no PC-NM91 cell" in page
    assert all(row.holds is None and row.measured.startswith("not measured") for row in rows)
    assert 'id="txm"' in page and page.count("data:image/png") == 1


def test_an_empty_campaign_reports_nothing_measured():
    rows = headlines(Campaign())

    assert {row.holds for row in rows} == {None}


def test_report_path_must_be_html(tmp_path):
    with pytest.raises(ValueError, match="report path must end in .html"):
        write_report(None, tmp_path / "report.pdf")


def test_cli_refuses_a_missing_data_dir(tmp_path, capsys):
    status = main(["report", "--data-dir", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r.html")])

    assert status == 2
    assert "nowhere: no catalog there" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_cli_writes_the_report_of_a_data_dir(tmp_path, capsys):
    """`nanostrain report --data-dir` serves the folder's catalog (embedded server on a
    free port) and writes the report from it."""
    from nanostrain.catalog import CatalogSettings, EmbeddedCatalog

    settings = CatalogSettings(data_dir=tmp_path / "data")
    with EmbeddedCatalog(settings) as server:
        write_txm_particle(server.client(), "NC91", 0.3, seed=3)
        write_txm_particle(server.client(), "NM91", 0.6, seed=4)

    status = main(["report", "--data-dir", str(tmp_path / "data"), "-o", str(tmp_path / "r.html")])

    assert status == 0
    out = capsys.readouterr().out
    assert re.search(r"report: .*r\.html", out)
    rows = re.findall(r'<td class="yes">', (tmp_path / "r.html").read_text(encoding="utf-8"))
    assert len(rows) == 1  # the TXM ordering, the only one measured
