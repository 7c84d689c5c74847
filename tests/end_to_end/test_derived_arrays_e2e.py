"""Derived arrays as chunked external files, end to end: `nanostrain serve` in its own
process, a session on the same data folder takes a short operando XRD run; its live
reduction's I(Q) patterns land in ``<data_dir>/derived/<uid>/patterns.h5``, registered by
StreamResource/StreamDatum, and a plain Tiled client slices them over HTTP; the events
keep the scalars; a replay (which writes no file) equals the live arrays."""

from __future__ import annotations

from pathlib import Path

import bluesky.plan_stubs as bps
import h5py
import numpy as np
import pytest
from event_model import DocumentNames, schema_validators

from nanostrain.callbacks.external_arrays import DEFAULT_MIN_BYTES
from nanostrain.callbacks.frames import resource_path
from nanostrain.catalog import CatalogSettings
from nanostrain.journal import read_journal
from nanostrain.plans.protocols import ProtocolStep
from nanostrain.replaying import replay
from nanostrain.schema.catalog import derived_runs
from nanostrain.session import make_session

from ..conftest import API_KEY, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.server]


@pytest.fixture(scope="module")
def xrd_run(tmp_path_factory):
    """(server, raw uid, derived uid of the XRD reduction) of a short charge (6 frames)."""
    settings = CatalogSettings(data_dir=tmp_path_factory.mktemp("arrays") / "data", api_key=API_KEY)
    server = ServerProcess(settings).start()
    try:
        session = make_session(catalog_uri=server.url, data_dir=settings.data_dir, api_key=API_KEY,
                               persist_metadata=False, progress=False)
        try:
            devices = session.devices
            session.RE(session.plans["mount_sample"](devices["cycler"], {"material": "NM91", "morphology": "SC"}))
            session.RE(bps.mv(devices["cycler"].time_scale, 600.0))
            (uid,) = session.RE(session.plans["operando_xrd"](
                devices["cycler"], devices["xrd"], (ProtocolStep("CC_CHARGE", 200.0, 2.7, 4.5, label="charge"),),
                active_mass_g=6.16e-3, cadence_mAh_g=40.0, exposure_s=1.0, monitor=devices["i0"],
                sample={"name": "SC-NM91"}))
        finally:
            session.close()  # hands every queued document to the catalog
        (derived,) = [r for r in derived_runs(server.client()["derived"], uid)
                      if r.metadata["start"]["analysis"] == "xrd_reduction"]
        yield server, uid, derived.metadata["start"]["uid"]
    finally:
        server.stop()

def test_patterns_slice_through_tiled_as_the_file_holds_them(xrd_run):
    server, _, derived_uid = xrd_run
    run = server.client()["derived"][derived_uid]
    intensity = run["patterns"]["intensity"]
    n, npt = intensity.shape
    assert n >= 5 and npt * intensity.dtype.itemsize >= DEFAULT_MIN_BYTES
    documents = list(run.documents())
    (resource,) = [doc for name, doc in documents if name == "stream_resource" and doc["data_key"] == "intensity"]
    path = resource_path(resource)
    assert path == server.settings.data_dir / "derived" / derived_uid / "patterns.h5"
    with h5py.File(path, "r") as handle:
        stored = handle[resource["parameters"]["dataset"]][()]
    np.testing.assert_array_equal(intensity[3:5], stored[3:5])
    np.testing.assert_array_equal(intensity.read(), stored)
    np.testing.assert_array_equal(run["patterns"].read()["intensity"], stored)  # the stream's dataset too
    assert np.asarray(run["patterns"]["raw_seq_num"].read()).tolist() == list(range(1, n + 1))
    for name, doc in documents:
        schema_validators[DocumentNames(name)].validate(doc)


def test_events_keep_the_scalars_and_leave_the_patterns_out(xrd_run):
    server, _, derived_uid = xrd_run
    journal = server.settings.data_dir / "journal" / "synced" / f"{derived_uid}.jsonl.gz"
    documents = read_journal(journal).documents
    events = [doc for name, doc in documents if name == "event"]
    assert events and not any("intensity" in doc["data"] for doc in events)
    assert any("c_A" in doc["data"] for doc in events)
    resources = {doc["uid"]: doc["data_key"] for name, doc in documents if name == "stream_resource"}
    datums = [resources[doc["stream_resource"]] for name, doc in documents if name == "stream_datum"]
    run = server.client()["derived"][derived_uid]
    assert datums.count("intensity") == run["patterns"]["intensity"].shape[0]
    assert datums.count("q") == 1  # the reduction's Q axis (447 float64) is a file too
    np.testing.assert_array_equal(run["reduction"]["q"][0], run["reduction"].read()["q"][0])


def test_replay_writes_no_file_and_equals_the_live_arrays_read_through_tiled(xrd_run):
    server, uid, derived_uid = xrd_run
    client = server.client()
    before = sorted(p for p in server.settings.data_dir.rglob("*") if p.is_file() and "journal" not in p.parts)
    published = replay(client["raw"][uid])
    (start,) = [doc for name, doc in published if name == "start" and doc["analysis"] == "xrd_reduction"]
    streams = {doc["uid"]: doc["name"] for name, doc in published if name == "descriptor" and doc["run_start"] == start["uid"]}
    rows = [doc["data"] for name, doc in published if name == "event" and streams.get(doc["descriptor"]) == "patterns"]
    live = client["derived"][derived_uid]["patterns"]["intensity"].read()
    np.testing.assert_array_equal(np.asarray([row["intensity"] for row in rows]), live)
    assert not any(name.startswith("stream_") for name, doc in published)
    after = sorted(p for p in server.settings.data_dir.rglob("*") if p.is_file() and "journal" not in p.parts)
    assert [p for p in after if p.suffix == ".h5"] == [p for p in before if p.suffix == ".h5"]


def test_the_documented_example_slices_two_patterns(xrd_run):
    """docs/architecture.md's example, run against this server (the newest raw run is the charge)."""
    server, _, derived_uid = xrd_run
    text = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    code = text.split("## Derived arrays")[1].split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(code.replace('"http://127.0.0.1:8000"', repr(server.url)), "docs/architecture.md", "exec"), namespace)
    live = server.client()["derived"][derived_uid]["patterns"]["intensity"].read()
    np.testing.assert_array_equal(namespace["two"], live[3:5])
    assert namespace["q_A"].shape == live.shape[1:]
