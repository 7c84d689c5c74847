"""The catalog speaks bluesky's idioms: its ``raw`` node is a CatalogOfBlueskyRuns
(``c[-1]``, ``c[scan_id]``, partial uids, TimeRange / ScanID / FullText), derived runs
live in a ``derived`` node of their own and are found by ``start.derived_from``, and
databroker's v1 Broker reads the raw runs (``db[-1].table()``).

Layout tests run against embedded SQLite and PostgreSQL (in-process app and a real
`nanostrain serve` process); the session and databroker tests against SQLite.
"""

from __future__ import annotations

import json

import bluesky.plans as bp
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky_tiled_plugins import TiledWriter
from bluesky_tiled_plugins.clients.catalog_of_bluesky_runs import CatalogOfBlueskyRuns
from bluesky_tiled_plugins.queries import ScanID, TimeRange
from ophyd.sim import det, motor
from tiled.queries import FullText, Key

from nanostrain.catalog import broker, build_catalog_app, catalog_nodes, migrate_root_runs
from nanostrain.schema.catalog import RUNS_SPEC, derived_runs
from nanostrain.session import make_session
from nanostrain.syncing import recover

from ..conftest import API_KEY, ServerProcess, in_process_client


def _scans(node, samples: list[str]) -> tuple[list[str], list[list]]:
    """One RunEngine (scan_id 1, 2, ...) writing a 3-point scan per sample into ``node``
    (None: into no catalog); the uids and the documents of each run."""
    RE = RunEngine({})
    if node is not None:
        RE.subscribe(TiledWriter(node))
    uids, documents = [], []
    for sample in samples:
        docs: list = []
        token = RE.subscribe(lambda name, doc: docs.append((name, doc)))
        (uid,) = RE(bp.scan([det], motor, -1, 1, 3, md={"sample": {"name": sample}}))
        RE.unsubscribe(token)
        uids.append(uid)
        documents.append(docs)
    return uids, documents


def _layout(client) -> dict[str, list[tuple[str, str | None]]]:
    return {key: [(spec.name, spec.version) for spec in client[key].specs] for key in client}


def test_the_app_lays_out_raw_and_derived_once_on_every_start(catalog_settings):
    app = build_catalog_app(catalog_settings)
    first = in_process_client(app)
    assert _layout(first) == {"raw": [RUNS_SPEC], "derived": [RUNS_SPEC]}
    (uid,), _ = _scans(first["raw"], ["NC91"])
    first.context.close()
    again = in_process_client(build_catalog_app(catalog_settings))  # a restart on the same database
    try:
        assert _layout(again) == {"raw": [RUNS_SPEC], "derived": [RUNS_SPEC]}
        assert list(again["raw"]) == [uid]
    finally:
        again.context.close()


@pytest.mark.server
def test_served_catalog_over_http_is_a_catalog_of_bluesky_runs(catalog_settings):
    """A real `nanostrain serve` process (SQLite and PostgreSQL) lays the catalog out."""
    server = ServerProcess(catalog_settings).start()
    try:
        client = server.client()
        assert _layout(client) == {"raw": [RUNS_SPEC], "derived": [RUNS_SPEC]}
        raw = client["raw"]
        assert isinstance(raw, CatalogOfBlueskyRuns)
        uids, _ = _scans(raw, ["NC91", "NM91"])
        assert raw[-1].metadata["start"]["uid"] == uids[1]
        assert raw[1].metadata["start"]["uid"] == uids[0]
        assert list(raw.search(FullText("NM91"))) == [uids[1]]
    finally:
        server.stop()


def test_raw_node_answers_bluesky_lookups_and_queries(catalog_client):
    raw = catalog_client["raw"]
    uids, _ = _scans(raw, ["NC91", "NM91", "LNO"])
    assert [raw[-k].metadata["start"]["uid"] for k in (1, 2, 3)] == uids[::-1]
    assert [raw[n].metadata["start"]["scan_id"] for n in (1, 2, 3)] == [1, 2, 3]
    assert raw[uids[1][:8]].metadata["start"]["uid"] == uids[1]
    with pytest.raises(KeyError):
        raw[99]
    assert list(raw.search(ScanID(3))) == [uids[2]]
    assert list(raw.search(FullText("NM91"))) == [uids[1]]
    assert list(raw.search(Key("sample.name") == "LNO")) == [uids[2]]  # "start." is implied
    second = raw[uids[1]].metadata["start"]["time"]
    assert list(raw.search(TimeRange(since=second))) == uids[1:]
    assert list(raw.search(TimeRange(until=second))) == uids[:1]


def _journal(path, docs) -> None:
    path.write_text("".join(json.dumps({"name": name, "doc": doc}) + "\n" for name, doc in docs))


def test_recover_puts_runs_back_into_their_node(catalog_client, tmp_path):
    """A journaled raw run goes into ``raw``, one whose start names ``derived_from``
    into ``derived``; documents come from a real run."""
    (raw_uid, derived_uid), (raw_docs, derived_docs) = _scans(None, ["NC91", "derived"])
    derived_docs[0][1]["derived_from"] = raw_uid  # the second run as a derived run of the first
    journal = tmp_path / "journal"
    journal.mkdir()
    _journal(journal / f"{raw_uid}.jsonl", raw_docs)
    _journal(journal / f"{derived_uid}.jsonl", derived_docs)
    assert sorted(recover(journal, catalog_client).written) == sorted([raw_uid, derived_uid])
    assert list(catalog_client["raw"]) == [raw_uid]
    (found,) = derived_runs(catalog_client["derived"], raw_uid)
    assert found.metadata["start"]["uid"] == derived_uid and found.metadata["stop"]["exit_status"] == "success"


@pytest.fixture
def session(tmp_path):
    s = make_session(data_dir=tmp_path / "data", api_key=API_KEY, persist_metadata=False)
    yield s
    s.close()


def _alignment(session, num: int = 3) -> str:
    d = session.devices
    (uid,) = session.RE(session.plans["alignment_scan"](d["cam"], d["sx"], -0.5, 0.5, num, monitor=d["i0"]))
    return uid


def test_the_last_run_is_the_raw_run_and_its_derived_runs_are_found_by_its_uid(session):
    uid = _alignment(session)
    assert session.catalog[-1].metadata["start"]["uid"] == uid
    assert list(session.catalog) == [uid]
    (derived,) = session.derived_runs(uid)
    assert derived.metadata["start"]["derived_from"] == uid
    assert session.derived[-1].metadata["start"]["uid"] == derived.metadata["start"]["uid"]
    assert uid not in session.derived


def test_databroker_v1_broker_reads_the_raw_runs(session):
    """databroker's v1 Broker over the raw node: headers, tables, search, filled
    detector frames, and insert (a RunEngine subscribing ``db.insert``); the session's
    own catalog client still serves v3 runs afterwards (replay reads frames through it)."""
    db = broker(session.catalog)
    db_insert = RunEngine({})
    db_insert.subscribe(db.insert)
    (scan_uid,) = db_insert(bp.scan([det], motor, -1, 1, 5, md={"sample": "NC91"}))
    uid = _alignment(session, num=4)

    header = db[-1]
    assert header.start["uid"] == uid and header.stop["exit_status"] == "success"
    table = header.table()
    assert np.allclose(table["sx"], np.linspace(-0.5, 0.5, 4))
    frames = header.table(fill=True)["cam"]
    live = session.catalog[uid]["primary"]["cam"].read()
    assert np.array_equal(np.stack(list(frames)), np.asarray(live))
    assert np.allclose(db[-2].table()["motor"], np.linspace(-1, 1, 5))
    assert db[scan_uid[:8]].start["uid"] == scan_uid
    assert [h.start["uid"] for h in db(sample="NC91")] == [scan_uid]
    assert [name for name, _ in db[-1].documents()][0] == "start"
    assert type(db[-1].v2).__name__ == "BlueskyRunV2SQL"
    assert type(session.catalog[uid]).__name__ == "BlueskyRunV3"
    (published,) = [doc for name, doc in session.replay(uid) if name == "start"]
    assert published["derived_from"] == uid


def _composed_run(**metadata) -> list[tuple[str, dict]]:
    import event_model

    bundle = event_model.compose_run(metadata=metadata)
    stream = bundle.compose_descriptor(name="primary", data_keys={"x": {"dtype": "number", "shape": [], "source": "s"}})
    events = [stream.compose_event(data={"x": float(i)}, timestamps={"x": 0.0}) for i in range(3)]
    return [("start", bundle.start_doc), ("descriptor", stream.descriptor_doc), *(("event", e) for e in events),
            ("stop", bundle.compose_stop())]


def test_runs_of_the_older_layout_move_from_the_root_into_raw_and_derived(catalog_client):
    raw_docs = _composed_run(plan_name="count")
    derived_docs = _composed_run(derived_from=raw_docs[0][1]["uid"], analysis="frame_statistics")
    old_writer = TiledWriter(catalog_client)  # as sessions wrote before raw/derived existed
    for name, doc in raw_docs + derived_docs:
        old_writer(name, doc)
    raw_uid, derived_uid = raw_docs[0][1]["uid"], derived_docs[0][1]["uid"]
    assert {raw_uid, derived_uid} <= set(catalog_client)

    said: list[str] = []
    moved = migrate_root_runs(catalog_client, say=said.append)
    assert sorted(moved) == sorted([raw_uid, derived_uid])
    raw, derived = catalog_nodes(catalog_client)
    assert set(catalog_client) == {"raw", "derived"}
    assert list(raw[-1]["primary"]["x"].read()) == [0.0, 1.0, 2.0] and raw[-1].metadata["start"]["uid"] == raw_uid
    assert [r.metadata["start"]["uid"] for r in derived_runs(derived, raw_uid)] == [derived_uid]
    assert migrate_root_runs(catalog_client, say=said.append) == []  # nothing left to move
