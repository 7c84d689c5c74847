"""End to end over HTTP: `nanostrain serve` in one process, a beamline session writing a
run from a second process, this process reading it back with a plain Tiled client,
validating every document and replaying it through the live analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from event_model import DocumentNames, schema_validators

from nanostrain.replaying import replay

from nanostrain.catalog import CatalogSettings

from ..conftest import API_KEY, ServerProcess, run_python

pytestmark = pytest.mark.server

WRITER = """
import json, sys
from nanostrain.session import make_session
s = make_session(catalog_uri={url!r}, data_dir={data_dir!r}, api_key={key!r}, persist_metadata=False)
docs = []
s.RE.subscribe(lambda name, doc: docs.append((name, doc)))
uid, = s.RE(s.plans["alignment_scan"](s.devices["cam"], s.devices["sx"], -1.0, 1.0, 7,
            monitor=s.devices["i0"], exposure_s=0.05, md={{"sample": {{"name": "e2e"}}}}))
derived = s.derived_runs(uid)[0]
print(json.dumps({{"uid": uid, "derived": derived.metadata["start"]["uid"],
                  "names": [n for n, _ in docs]}}))
"""


@pytest.fixture(scope="module")
def written_run(tmp_path_factory):
    """One server and one written run shared by this module's read-only tests."""
    settings = CatalogSettings(data_dir=tmp_path_factory.mktemp("e2e") / "data", api_key=API_KEY)
    server = ServerProcess(settings).start()
    try:
        result = run_python(WRITER.format(url=server.url, data_dir=str(settings.data_dir), key=settings.api_key))
        yield server, json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        server.stop()


def test_run_written_by_another_process_reads_back_over_http(written_run):
    server, info = written_run
    run = server.client()["raw"][info["uid"]]
    table = run["primary"].read()
    assert np.allclose(table["sx"], np.linspace(-1, 1, 7))
    # the ophyd (v1) beam monitor recorded in the same plan as the ophyd-async devices
    assert np.allclose(table["i0_flux"], 1e9, rtol=0.01)
    frames = run["primary"]["cam"].read()
    assert frames.shape[0] == 7 and frames.shape[-2:] == (64, 96)
    assert frames.sum() > 0


def test_every_exported_document_validates_against_event_model(written_run):
    server, info = written_run
    documents = list(server.client()["raw"][info["uid"]].documents())
    names = {name for name, _ in documents}
    assert {"start", "descriptor", "event", "stream_resource", "stream_datum", "stop"} <= names
    for name, doc in documents:
        schema_validators[DocumentNames(name)].validate(doc)


def test_live_analysis_follows_the_stage(written_run):
    server, info = written_run
    stats = server.client()["derived"][info["derived"]]["frame_stats"].read()
    # spot centre = 48 + 20 px/mm * x (the bench's calibration)
    assert np.allclose(stats["centroid_col"], 48 + 20 * np.asarray(stats["sx"]), atol=0.3)


def test_replay_through_the_catalog_equals_live(written_run):
    server, info = written_run
    client = server.client()
    live = client["derived"][info["derived"]]["frame_stats"].read()
    published = replay(client["raw"][info["uid"]])
    starts = [doc for name, doc in published if name == "start"]
    assert len(starts) == 1 and starts[0]["derived_from"] == info["uid"]
    events = [doc["data"] for name, doc in published if name == "event"]
    assert len(events) == len(live["raw_seq_num"])
    for key in ("centroid_col", "centroid_row", "total", "maximum", "sx", "raw_seq_num"):
        assert np.array_equal(np.asarray([e[key] for e in events]), np.asarray(live[key])), key
    for name, doc in published:
        schema_validators[DocumentNames(name)].validate(doc)
