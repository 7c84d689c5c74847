"""The web view (`nanostrain.webview`): its JSON read from a real catalog, and its pages in
a real browser (Playwright driving Debian's Chromium) against a real `nanostrain serve`
process that a beamline session writes runs into."""

from __future__ import annotations

import re
import shutil
import threading

import httpx
import pytest

from nanostrain.listing import RUNNING, list_runs, sample_name, summarize

from ..conftest import API_KEY, require

#: a sample name a user could type: must show as text, never as markup
HOSTILE = '<b id="injected">NM91</b> & "co"'
COLUMNS = ["time", "scan", "plan", "sample", "technique", "status", "derived runs", "uid"]


# ---- listing: summaries from metadata ---------------------------------------------------

def test_summary_of_a_run_without_stop_is_running_and_names_its_sample():
    summary = summarize({"start": {"uid": "u1", "time": 10.0, "scan_id": 3, "plan_name": "count",
                                   "technique": "xrd", "sample": {"name": "SC-NM91"}}})

    assert (summary.uid, summary.scan_id, summary.plan, summary.sample, summary.technique, summary.status) == (
        "u1", 3, "count", "SC-NM91", "xrd", RUNNING)


def test_summary_takes_the_exit_status_of_the_stop_document():
    summary = summarize({"start": {"uid": "u1", "time": 1.0, "analysis": "xrd_reduction", "derived_from": "r"},
                         "stop": {"exit_status": "abort"}})

    assert (summary.status, summary.analysis, summary.derived_from) == ("abort", "xrd_reduction", "r")


@pytest.mark.parametrize("start, name", [({"sample": "CeO2"}, "CeO2"), ({"sample": {"calibrant": "CeO2"}}, "CeO2"),
                                         ({}, ""), ({"sample": {"material": "NM91"}}, "")])
def test_sample_name_reads_every_form_a_sample_is_recorded_in(start, name):
    assert sample_name(start) == name


def test_summary_of_metadata_without_start_names_the_argument():
    with pytest.raises(ValueError, match="metadata"):
        summarize({"stop": {}})


def _write_run(node, uid_prefix: str, time: float, derived_from: str | None = None, stop: bool = True) -> str:
    """A minimal bluesky run written with bluesky-tiled-plugins' TiledWriter."""
    from bluesky_tiled_plugins import TiledWriter
    from event_model import compose_run

    md = {"plan_name": "count", "technique": "alignment", "sample": {"name": uid_prefix}}
    if derived_from:
        md.update(analysis="frame_statistics", derived_from=derived_from)
    bundle = compose_run(metadata=md, time=time)
    writer = TiledWriter(node)
    writer("start", bundle.start_doc)
    if stop:
        writer("stop", bundle.compose_stop())
    return bundle.start_doc["uid"]


def test_list_runs_gives_the_newest_raw_runs_first_with_their_derived_runs(catalog_client):
    from nanostrain.catalog import catalog_nodes

    raw, derived = catalog_nodes(catalog_client)
    # written out of time order: the listing sorts by start time, not by arrival
    middle = _write_run(raw, "middle", 2000.0)
    oldest = _write_run(raw, "oldest", 1000.0)
    newest = _write_run(raw, "newest", 3000.0, stop=False)
    analysis = _write_run(derived, "d-middle", 2001.0, derived_from=middle)

    runs = list_runs(raw, derived, limit=2)

    assert [run.uid for run in runs] == [newest, middle]
    assert [run.status for run in runs] == [RUNNING, "success"]
    assert [d.uid for d in runs[1].derived] == [analysis] and runs[0].derived == ()
    assert oldest not in [run.uid for run in list_runs(raw, derived, limit=2)]


def test_list_runs_refuses_a_limit_below_one(catalog_client):
    from nanostrain.catalog import catalog_nodes

    with pytest.raises(ValueError, match="limit"):
        list_runs(*catalog_nodes(catalog_client), limit=0)


# ---- the served view --------------------------------------------------------------------

def test_view_answers_json_errors_for_unknown_runs_and_has_no_runs_yet(server_process):
    url = server_process.url
    assert httpx.get(f"{url}/view/api/runs").json() == []
    assert httpx.get(f"{url}/view/api/run/no-such-uid").status_code == 404
    assert httpx.get(f"{url}/view/figure/no-such-uid.png").status_code == 404
    assert httpx.get(f"{url}/view/api/runs", params={"limit": 0}).status_code == 422
    page = httpx.get(f"{url}/view/", follow_redirects=True)
    assert page.status_code == 200 and "No runs yet" in page.text
    assert httpx.get(f"{url}/view/static/view.js").status_code == 200


@pytest.fixture
def session(server_process):
    from nanostrain.session import make_session

    session = make_session(catalog_uri=server_process.url, data_dir=server_process.settings.data_dir,
                           api_key=API_KEY, persist_metadata=False)
    session.RE.context_managers = []  # the RunEngine runs on a thread of the test (no SIGINT handler there)
    yield session
    session.close()


@pytest.mark.slow
@pytest.mark.server
def test_run_json_holds_the_derived_tables_as_the_catalog_has_them(server_process, session):
    import numpy as np

    devices = session.devices
    (uid,) = session.RE(session.plans["alignment_scan"](devices["cam"], devices["sx"], -1, 1, 5, monitor=devices["i0"],
                                                       exposure_s=0.01, sample={"name": HOSTILE}))
    (derived,) = session.derived_runs(uid)
    expected = derived["frame_stats"].read()

    page = httpx.get(f"{server_process.url}/view/api/run/{uid}").json()

    assert page["run"]["uid"] == uid and page["run"]["sample"] == HOSTILE and page["run"]["status"] == "success"
    assert dict(page["metadata"])["plan_name"] == "alignment_scan"
    (result,) = page["derived"]
    assert (result["analysis"], result["status"], result["figure"]) == ("frame_statistics", "success", None)
    (table,) = result["tables"]
    assert table["stream"] == "frame_stats" and len(table["rows"]) == result["version"] == 5
    for name in ("sx", "total", "centroid_col"):
        column = [row[table["columns"].index(name)] for row in table["rows"]]
        np.testing.assert_allclose(column, np.asarray(expected[name]), rtol=1e-12)
    figure = httpx.get(f"{server_process.url}/view/figure/{result['uid']}.png")
    assert figure.status_code == 404 and "no figure" in figure.text


def _operando_xrd(session, sample_name: str):
    """A short operando XRD run of the simulated cell (one cycle at 200 mA/g, ~1 min)."""
    import bluesky.plan_stubs as bps

    from nanostrain.demo import ACTIVE_MASS_G
    from nanostrain.plans.protocols import galvanostatic

    devices = session.devices
    xrd = next(a for a in session.analyses if a.analysis == "xrd_reduction")
    session.RE(session.plans["mount_sample"](devices["cycler"], {"material": "NM91", "morphology": "SC"}))
    session.RE(bps.mv(devices["cycler"].time_scale, 130.0))
    return session.plans["operando_xrd"](
        devices["cycler"], devices["xrd"], galvanostatic(200.0, 1), active_mass_g=ACTIVE_MASS_G,
        cadence_mAh_g=10.0, exposure_s=0.1, monitor=devices["i0"], min_flux=1e8,
        feedback=xrd.signals["lattice_change_A"], feedback_threshold=0.03, dense_factor=4.0,
        sample={"name": sample_name, "composition": "NM91", "morphology": "SC", "specific_current_mA_g": 200.0},
    )


@pytest.mark.slow
@pytest.mark.server
def test_view_in_a_browser_lists_runs_shows_results_and_follows_a_run_in_progress(server_process, session, tmp_path):
    chromium = shutil.which("chromium")
    require(chromium is not None, "Debian's chromium (.ci/run installs it)")
    from playwright.sync_api import expect, sync_playwright

    devices = session.devices
    (alignment,) = session.RE(session.plans["alignment_scan"](devices["cam"], devices["sx"], -1, 1, 5, monitor=devices["i0"],
                                                             exposure_s=0.01, sample={"name": HOSTILE}))
    raw = server_process.client()["raw"]
    results: list = []
    acquisition = threading.Thread(target=lambda: results.extend(session.RE(_operando_xrd(session, "SC-NM91 live"))))
    acquisition.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{server_process.url}/view/")

            # the runs page: header, the newest run (in progress) first, text shown as text
            running_row = page.locator("#runs tbody tr").filter(has_text="SC-NM91 live")
            expect(running_row.locator("td").nth(5)).to_have_text(RUNNING, timeout=120_000)
            assert page.locator("#runs thead th").all_inner_texts() == COLUMNS
            rows = page.locator("#runs tbody tr")
            assert rows.nth(0).locator("td").nth(3).inner_text() == "SC-NM91 live"
            alignment_row = rows.filter(has=page.locator(f'a[href="run/{alignment}"]'))
            cells = alignment_row.locator("td").all_inner_texts()
            assert cells[1:6] == ["1", "alignment_scan", HOSTILE, "alignment", "success"]
            assert page.locator("#injected").count() == 0
            expect(alignment_row.locator(".derived-list a")).to_have_text(["frame_statistics"])
            page.screenshot(path=tmp_path / "runs.png", full_page=True)

            # the page of the run in progress: rows arrive without a reload
            running_row.locator("td.uid a").click()
            expect(page.locator("#live")).to_have_text(RUNNING)
            section = page.locator('section.derived[data-analysis="xrd_reduction"]')
            expect(section).to_have_attribute("data-rows", re.compile(r"^[1-9]\d*$"), timeout=120_000)
            first = int(section.get_attribute("data-rows"))
            page.evaluate("window.notReloaded = true")
            page.wait_for_function(
                "n => Number(document.querySelector('section.derived[data-analysis=\"xrd_reduction\"]').dataset.rows) > n",
                arg=first, timeout=120_000)
            expect(page.locator("#live")).to_have_text("success", timeout=300_000)
            assert page.evaluate("window.notReloaded") is True

            # results: the reduction's scalar table and its figure, drawn by the server
            xrd_table = section.locator('[data-stream="xrd"] table')
            headers = xrd_table.locator("thead th").all_inner_texts()
            assert {"a_A", "c_A", "potential_V"} <= {header.split(" ")[0] for header in headers}
            uid = results[0] if results else None
            frames = len(raw[uid]["primary"].read()["time"]) if uid else None
            expect(xrd_table.locator("tbody tr")).to_have_count(frames)
            expect(section.locator(".figure img")).to_be_visible(timeout=60_000)
            page.wait_for_function("[...document.querySelectorAll('.figure img')].every(i => i.complete && i.naturalWidth > 300)",
                                   timeout=60_000)
            assert page.locator('section.derived[data-analysis="electrochemistry"]').count() == 1
            expect(page.locator('section.derived[data-status="running"]')).to_have_count(0, timeout=60_000)
            page.screenshot(path=tmp_path / "run.png", full_page=True)
            browser.close()
    finally:
        acquisition.join(timeout=600)
    print(f"screenshots: {tmp_path / 'runs.png'}, {tmp_path / 'run.png'}")
