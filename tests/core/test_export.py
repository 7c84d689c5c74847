"""Export of an operando XRD run for GSAS-II (`nanostrain.export`, `nanostrain export gsas2`).

A short simulated operando run (SC-NM91 charged at 200 mA/g, four frames of the
simulated 1024 x 1024 panel) is taken by a session into a catalog on a data folder; the
export then reads the catalog alone. GSAS-II itself cannot be installed here (it is not
on the package index), so the files are checked against the formats its readers
document (``G2pwd_xye``: 2 theta, I, esd columns after comment lines; ``ReadInstprm``:
a ``GSAS-II`` header line, then only ``key:value`` lines) and against the derived run:
the patterns read back with numpy and converted to Q equal the reduction's I(Q), and the
(003) line sits where the run's reported c puts it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import bluesky.plan_stubs as bps
import event_model
import numpy as np
import pytest
from bluesky_tiled_plugins import TiledWriter

from nanostrain.analysis.units import d_to_two_theta, two_theta_to_q
from nanostrain.analysis.xrd import GsasProfile, gsas_profile, pyfai_geometry
from nanostrain.catalog import CatalogSettings, EmbeddedCatalog, catalog_nodes
from nanostrain.cli import main
from nanostrain.export import ExportError, export_gsas2, instprm_text
from nanostrain.plans.protocols import ProtocolStep
from nanostrain.schema.catalog import derived_runs

from ..conftest import in_process_client

pytestmark = pytest.mark.slow

INSTPRM_KEYS = ["Type", "Bank", "Lam", "Zero", "Polariz.", "Azimuth", "U", "V", "W", "X", "Y", "Z", "SH/L"]


def charge(session) -> str:
    """Four frames of SC-NM91 charged at 200 mA/g; the raw run's uid."""
    devices = session.devices
    session.RE(session.plans["mount_sample"](devices["cycler"], {"material": "NM91", "morphology": "SC"}))
    session.RE(bps.mv(devices["cycler"].time_scale, 600.0))
    (uid,) = session.RE(session.plans["operando_xrd"](
        devices["cycler"], devices["xrd"], (ProtocolStep("CC_CHARGE", 200.0, 2.7, 4.5, label="charge"),),
        active_mass_g=6.16e-3, cadence_mAh_g=60.0, exposure_s=1.0, monitor=devices["i0"],
        sample={"name": "SC-NM91"}))
    return uid


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A data folder whose catalog holds an operando XRD run on the panel's nominal
    geometry (``uncalibrated``), a CeO2 calibration of the panel, and an operando XRD run
    on the calibrated geometry (``calibrated``); ``fwhm_deg``: the simulated instrument's
    Gaussian FWHM (degrees 2 theta), the known answer of the calibrated profile."""
    from nanostrain.session import make_session

    folder = tmp_path_factory.mktemp("export") / "data"
    session = make_session(data_dir=folder, persist_metadata=False, progress=False)
    try:
        uncalibrated = charge(session)
        xrd = session.devices["xrd"]
        xrd.set_sample("CeO2")
        signal = next(a for a in session.analyses if a.analysis == "xrd_calibration").signals["geometry"]
        session.RE(session.plans["calibrate_xrd"](xrd, str(folder.parent / "ceo2.poni"), signal, exposure_s=1.0))
        calibrated = charge(session)
        fwhm_deg = xrd.powder.instrument_fwhm_deg
    finally:
        session.close()
    (folder / "runs.json").write_text(json.dumps({"uncalibrated": uncalibrated, "calibrated": calibrated,
                                                  "fwhm_deg": fwhm_deg}))
    return folder


@pytest.fixture(scope="module")
def runs(data_dir) -> dict:
    return json.loads((data_dir / "runs.json").read_text())


@pytest.fixture(scope="module")
def client(data_dir):
    with EmbeddedCatalog(CatalogSettings(data_dir=data_dir)) as server:
        client = server.client()
        yield client
        client.context.close()


@pytest.fixture(scope="module")
def uid(runs) -> str:
    return runs["calibrated"]


@pytest.fixture(scope="module")
def exported(client, uid, tmp_path_factory):
    return export_gsas2(client, uid, tmp_path_factory.mktemp("gsas") / "out", fxye=True)


@pytest.fixture(scope="module")
def reduction(client, uid):
    raw, derived = catalog_nodes(client)
    (run,) = [r for r in derived_runs(derived, uid) if r.metadata["start"]["analysis"] == "xrd_reduction"]
    return {
        "q": np.asarray(run["reduction"]["q"].read())[0],
        "wavelength_A": float(np.asarray(run["reduction"]["wavelength_A"].read())[0]),
        "intensity": np.asarray(run["patterns"]["intensity"].read()),
        "seq": np.asarray(run["patterns"]["raw_seq_num"].read()),
        "c_A": np.asarray(run["xrd"]["c_A"].read()),
        "n_phases": np.asarray(run["xrd"]["n_phases"].read()),
        "potential_V": np.asarray(run["xrd"]["potential_V"].read()),
        "geometry": pyfai_geometry(raw[uid].metadata["start"]["xrd_geometry"]),
    }


def read_xye(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    comments = [line for line in lines if not line[:1].isdigit()]
    return comments, np.loadtxt(path, comments="/*")


def read_instprm(path: Path) -> tuple[str, dict[str, str]]:
    """GSAS-II's reading: the header line, then ``key:value`` items (';' may join items)."""
    header, *lines = path.read_text().splitlines()
    items = {}
    for line in lines:
        for item in line.replace(" ", "").split(";"):
            key, value = item.split(":", 1)
            items[key] = value
    return header, items


def test_one_xye_per_reduced_frame_reads_back_as_the_reductions_i_of_q(exported, reduction, uid):
    """2 theta (deg) -> Q = 4 pi sin(theta) / lambda gives the derived run's Q bins, and
    the intensities are its I(Q) to the last digit; bins no pixel reaches are left out."""
    assert [p.name for p in exported.patterns] == [f"SC-NM91_{uid[:8]}_{s:04d}.xye" for s in reduction["seq"]]
    for path, intensity in zip(exported.patterns, reduction["intensity"]):
        two_theta, y, esd = read_xye(path)[1].T
        q = two_theta_to_q(two_theta, reduction["wavelength_A"])
        kept = np.isin(np.round(reduction["q"], 9), np.round(q, 9))
        assert kept.sum() == q.size >= 0.95 * reduction["q"].size
        np.testing.assert_allclose(q, reduction["q"][kept], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(y, intensity[kept])
        assert np.all(esd > 0) and np.all(np.diff(two_theta) > 0)


def test_esd_is_the_poisson_sigma_of_the_azimuthal_average(exported, reduction):
    """esd^2 x N_b = I_b: a bin holding N_b pixels of mean I_b counts has sigma sqrt(I_b / N_b),
    so esd is far below sqrt(I) (the many pixels of a ring) and grows with I."""
    two_theta, y, esd = read_xye(exported.patterns[0])[1].T
    bright = y > 10
    n_b = y[bright] / esd[bright] ** 2
    assert np.all(n_b > 10) and np.all(esd[bright] < np.sqrt(y[bright]) / 3)


def test_the_003_line_sits_where_the_reported_c_puts_it(exported, reduction):
    """Maximum of the exported pattern near (003) within one bin of 2 asin(lambda / (2 d003)),
    d003 = c / 3, on every single-phase frame."""
    wavelength = reduction["wavelength_A"]
    single = np.flatnonzero(reduction["n_phases"] == 1)
    assert single.size >= 2
    for i in single:
        two_theta, y, _ = read_xye(exported.patterns[i])[1].T
        expected = float(d_to_two_theta(reduction["c_A"][i] / 3, wavelength))
        near = np.abs(two_theta - expected) < 0.1
        peak = two_theta[near][np.argmax(y[near])]
        bin_width = float(np.median(np.diff(two_theta[near])))
        assert abs(peak - expected) <= bin_width, (i, peak, expected)


def test_fxye_holds_the_same_pattern_in_centidegrees_under_a_bank_line(exported):
    """GSAS FXYE as GSAS-II's reader takes it: a title, the instrument parameter file, one
    ``BANK 1 n n CONS start step 0 0 FXYE`` line, then 2 theta x 100, I, esd."""
    assert [p.with_suffix(".xye") for p in exported.fxye] == exported.patterns
    for fxye, xye in zip(exported.fxye, exported.patterns):
        title, inst, bank, *rows = fxye.read_text().splitlines()
        assert f"/* {title} */" == xye.read_text().splitlines()[0]
        assert inst == f"Instrument parameter file:{exported.instprm.name}"
        words = bank.split()
        assert words[:2] == ["BANK", "1"] and words[4] == "CONS" and words[-1] == "FXYE"
        assert int(words[2]) == int(words[3]) == len(rows)
        data = np.loadtxt(rows)
        expected = read_xye(xye)[1]
        np.testing.assert_allclose(data[:, 0] / 100, expected[:, 0], rtol=1e-15)
        np.testing.assert_array_equal(data[:, 1:], expected[:, 1:])
        assert float(words[5]) == data[0, 0]


def test_the_header_names_run_frame_time_and_potential_in_one_comment_line(exported, reduction, uid):
    comments, _ = read_xye(exported.patterns[1])
    (header,) = comments
    assert header.startswith("/* ") and header.endswith(" */")
    assert uid in header and f"frame {reduction['seq'][1]} " in header
    assert f"potential {reduction['potential_V'][1]:.4f} V charge " in header and "mAh/g" in header
    assert "time 20" in header  # ISO date


def test_instprm_has_gsas2s_keys_and_the_poni_wavelength(exported, reduction):
    header, items = read_instprm(exported.instprm)
    assert header == "#GSAS-II instrument parameter file; do not add/delete items!"
    assert list(items) == INSTPRM_KEYS
    assert items["Type"] == "PXC"
    assert float(items["Lam"]) == pytest.approx(reduction["geometry"].wavelength * 1e10, rel=1e-12)
    assert all(math.isfinite(float(items[key])) for key in INSTPRM_KEYS[1:])


def test_the_profile_comes_from_the_ceo2_calibrations_ring_widths(exported, runs):
    """The simulated panel draws CeO2 lines with a Gaussian FWHM of 1.5 pixels' angle and no
    Lorentzian: GSAS-II's FWHM from the exported U, V, W (sqrt(8 ln 2 sigma^2), centideg)
    gives it back within 2 % over the rings' angles, the Lorentzian X / cos + Y tan stays
    below a tenth of it, and the index names the calibration."""
    _, items = read_instprm(exported.instprm)
    u, v, w, x, y = (float(items[key]) for key in "UVWXY")
    theta = np.radians(np.linspace(3.0, 10.0, 8)) / 2
    gauss_deg = np.sqrt(8 * math.log(2) * (u * np.tan(theta) ** 2 + v * np.tan(theta) + w)) / 100
    lorentz_deg = (x / np.cos(theta) + y * np.tan(theta)) / 100
    np.testing.assert_allclose(gauss_deg, runs["fwhm_deg"], rtol=0.02)
    assert np.all(np.abs(lorentz_deg) < 0.1 * runs["fwhm_deg"])
    assert not exported.notes and "Caglioti fit of the line widths of" in exported.profile_source
    assert exported.profile_source in exported.index.read_text()


def test_without_a_calibration_the_profile_is_the_documented_default_and_said(client, runs, tmp_path):
    """The run taken before any calibration: W = (100 FWHM)^2 / (8 ln 2) centideg^2 for
    FWHM = 1.5 p / D, U = V = X = Y = 0, and a NOTE in the index."""
    result = export_gsas2(client, runs["uncalibrated"], tmp_path / "out")

    raw, _ = catalog_nodes(client)
    geometry = pyfai_geometry(raw[runs["uncalibrated"]].metadata["start"]["xrd_geometry"])
    fwhm_centideg = 100 * math.degrees(1.5 * geometry.pixel1 / geometry.dist)
    _, items = read_instprm(result.instprm)
    assert float(items["W"]) == pytest.approx(fwhm_centideg**2 / (8 * math.log(2)), rel=1e-12)
    assert float(items["U"]) == float(items["V"]) == float(items["X"]) == float(items["Y"]) == 0.0
    assert result.notes and "no calibration run with measured ring widths" in result.notes[0]
    assert f"NOTE: {result.notes[0]}" in result.index.read_text()


def test_sequence_index_lists_the_files_in_order_with_time_and_potential(exported, reduction):
    rows = [line.split("\t") for line in exported.index.read_text().splitlines() if not line.startswith("#")]
    assert [row[0] for row in rows] == [p.name for p in exported.patterns]
    np.testing.assert_allclose([float(row[4]) for row in rows], reduction["potential_V"], atol=1e-4)
    elapsed = [float(row[3]) for row in rows]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0


def test_gsas_profile_recovers_known_caglioti_and_lorentzian_terms():
    """Widths made from known U, V, W, X, Y (GSAS-II's formulas) give them back."""
    truth = GsasProfile(U=2.0, V=-0.5, W=0.8, X=0.3, Y=1.2)
    two_theta = np.array([3.0, 5.0, 8.0, 12.0, 18.0])
    tan = np.tan(np.radians(two_theta) / 2)
    sigma2 = truth.U * tan**2 + truth.V * tan + truth.W
    gauss_deg = np.sqrt(8 * math.log(2) * sigma2) / 100
    lorentz_deg = (truth.X / np.cos(np.radians(two_theta) / 2) + truth.Y * tan) / 100

    fitted = gsas_profile(two_theta, gauss_deg, lorentz_deg)

    np.testing.assert_allclose(fitted, truth, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="3 lines"):
        gsas_profile(two_theta[:2], gauss_deg[:2], lorentz_deg[:2])


def test_instprm_text_reads_as_gsas2_items(tmp_path):
    path = tmp_path / "x.instprm"
    path.write_text(instprm_text(0.4520, GsasProfile(1.0, -0.1, 0.05, 0.2, 0.3)))
    _, items = read_instprm(path)
    assert list(items) == INSTPRM_KEYS and float(items["Lam"]) == 0.4520 and float(items["Y"]) == 0.3


# ------------------------------------------------------------------------------- errors
def test_an_unknown_uid_is_refused(client, tmp_path):
    with pytest.raises(ExportError, match="no run 'nope'"):
        export_gsas2(client, "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_run_without_reduction_or_not_xrd_is_refused(sqlite_settings, tmp_path):
    client = in_process_client(sqlite_settings)
    raw, _ = catalog_nodes(client)
    writer = TiledWriter(raw)
    uids = {}
    for technique in ("xrd", "xas"):
        bundle = event_model.compose_run(metadata={"technique": technique, "plan_name": "p"})
        writer("start", bundle.start_doc)
        writer("stop", bundle.compose_stop())
        uids[technique] = bundle.start_doc["uid"]
    try:
        with pytest.raises(ExportError, match="no successful xrd_reduction"):
            export_gsas2(client, uids["xrd"], tmp_path / "a")
        with pytest.raises(ExportError, match="not operando XRD"):
            export_gsas2(client, uids["xas"], tmp_path / "b")
    finally:
        client.context.close()


def test_an_output_folder_in_use_is_refused_without_overwrite(client, uid, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_gsas2(client, uid, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_cli_exports_a_run_of_a_data_dir(data_dir, uid, tmp_path):
    """``python -m nanostrain export gsas2 UID --output DIR --data-dir D`` end to end."""
    out = tmp_path / "gsas"
    done = subprocess.run([sys.executable, "-m", "nanostrain", "export", "gsas2", uid, "--output", str(out),
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    assert "4 pattern(s)" in done.stdout and "instrument profile from the calibration" in done.stdout
    assert len(list(out.glob("*.xye"))) == 4 and len(list(out.glob("*.instprm"))) == 1
    assert (out / "sequence.txt").is_file()


def test_cli_refuses_a_folder_in_use_unless_overwrite_and_never_deletes(data_dir, uid, tmp_path, capsys):
    out = tmp_path / "gsas"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    command = ["export", "gsas2", uid[:8], "--output", str(out), "--data-dir", str(data_dir)]

    assert main(command) == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main([*command, "--overwrite"]) == 0
    assert len(list(out.glob("*.xye"))) == 4 and (out / "notes.txt").read_text() == "mine"


def test_cli_names_an_unknown_uid(data_dir, tmp_path, capsys):
    status = main(["export", "gsas2", "nope", "--output", str(tmp_path / "x"), "--data-dir", str(data_dir)])

    assert status == 2
    assert "no run 'nope'" in capsys.readouterr().err
