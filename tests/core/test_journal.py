"""The write-ahead journal and `recover`: documents on disk as emitted, read back from
damaged and truncated files, replayed into the catalog file by file and idempotently."""

from __future__ import annotations

import json

import bluesky.plans as bp
import pytest
from bluesky import RunEngine
from bluesky_tiled_plugins import TiledWriter
from event_model import compose_run
from ophyd.sim import det, motor

from nanostrain.journal import Journal, journal_path, mark_synced, pending_journals, read_journal
from nanostrain.syncing import DocumentRecorder, StorageError, closing_stop, recover


def _run_documents(num: int = 5, **md) -> list[tuple[str, dict]]:
    """The documents of a real ``num``-point scan (simulated ophyd devices)."""
    RE = RunEngine({})
    docs: list = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(bp.scan([det], motor, -1, 1, num, md=md))
    return docs


def _derived_documents(raw_uid: str, num: int = 3) -> list[tuple[str, dict]]:
    """A derived run of ``num`` events, composed as the live analyses compose theirs."""
    run = compose_run(metadata={"derived_from": raw_uid, "analysis": "test", "purpose": "derived"})
    descriptor = run.compose_descriptor(name="stats", data_keys={"total": {"source": "test", "dtype": "number", "shape": []}})
    docs = [("start", run.start_doc), ("descriptor", descriptor.descriptor_doc)]
    docs += [("event", descriptor.compose_event(data={"total": float(i)}, timestamps={"total": 0.0})) for i in range(num)]
    docs.append(("stop", run.compose_stop()))
    return docs


def _as_json(docs):
    return [(name, json.loads(json.dumps(doc))) for name, doc in docs]


def test_every_document_lands_in_its_runs_file_in_order(tmp_path):
    raw = _run_documents()
    derived = _derived_documents(raw[0][1]["uid"])
    journal = Journal(tmp_path / "journal")
    # a derived run is published while its raw run is still going: interleave them
    for entry in [*raw[:3], *derived[:3], *raw[3:], *derived[3:]]:
        assert journal(*entry)
    for docs in (raw, derived):
        found = read_journal(journal_path(tmp_path / "journal", docs[0][1]["uid"]))
        assert found.damage is None and not found.truncated
        assert found.documents == _as_json(docs)
    assert journal._files == {}  # both stops closed their files


def test_a_cut_last_line_loses_only_that_line(tmp_path):
    docs = _run_documents()
    path = tmp_path / "run.jsonl"
    lines = [json.dumps({"name": n, "doc": d}) for n, d in docs]
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    found = read_journal(path)
    assert found.damage is None and found.truncated
    assert found.documents == _as_json(docs[:-1])


def test_a_synced_run_is_kept_gzipped_and_reads_back_whole(tmp_path):
    docs = _run_documents(num=50)
    journal = Journal(tmp_path / "journal")
    for entry in docs:
        journal(*entry)
    path = journal_path(tmp_path / "journal", docs[0][1]["uid"])
    size = path.stat().st_size
    mark_synced(path)
    mark_synced(path)  # again: nothing left to move
    (archived,) = (tmp_path / "journal" / "synced").iterdir()
    assert not path.exists() and pending_journals(tmp_path / "journal") == []
    assert archived.name == path.name + ".gz" and archived.stat().st_size < size / 4
    found = read_journal(archived)
    assert found.damage is None and not found.truncated and found.documents == _as_json(docs)
    archived.write_bytes(archived.read_bytes()[: archived.stat().st_size // 2])  # a cut archive
    assert "cannot be read" in read_journal(archived).damage


def test_a_bad_line_inside_a_file_names_the_damage(tmp_path):
    docs = _run_documents()
    lines = [json.dumps({"name": n, "doc": d}) for n, d in docs]
    (tmp_path / "headless.jsonl").write_text("\n".join(lines[1:]) + "\n")
    lines[2] = lines[2][:10]
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    assert read_journal(tmp_path / "bad.jsonl").damage.startswith("line 3 is not a document")
    assert read_journal(tmp_path / "headless.jsonl").damage == "does not begin with a start document"


def test_closing_stop_counts_events_and_says_the_run_failed():
    docs = _run_documents(num=4)[:-1]  # the session died before the stop
    stop = closing_stop(docs)
    assert stop["exit_status"] == "fail" and "journal" in stop["reason"]
    assert stop["num_events"] == {"primary": 4} and stop["run_start"] == docs[0][1]["uid"]


def _write(path, docs) -> None:
    path.write_text("".join(json.dumps({"name": n, "doc": d}) + "\n" for n, d in docs))


def test_recover_goes_file_by_file_and_twice_adds_nothing(catalog_client, tmp_path):
    journal = tmp_path / "journal"
    journal.mkdir()
    good, cut, bad = (_run_documents(num=n) for n in (3, 6, 4))
    derived = _derived_documents(good[0][1]["uid"])
    _write(journal_path(journal, good[0][1]["uid"]), good)
    _write(journal_path(journal, derived[0][1]["uid"]), derived)
    # a session killed mid-scan: no stop, and its last line half written
    text = "".join(json.dumps({"name": n, "doc": d}) + "\n" for n, d in cut[:-2])
    journal_path(journal, cut[0][1]["uid"]).write_text(text + json.dumps({"name": "event", "doc": cut[-2][1]})[:40])
    lines = [json.dumps({"name": n, "doc": d}) for n, d in bad]
    lines[1] = "{not json"
    damaged = journal_path(journal, bad[0][1]["uid"])
    damaged.write_text("\n".join(lines) + "\n")

    report = recover(journal, catalog_client)

    assert sorted(report.written) == sorted(docs[0][1]["uid"] for docs in (good, cut, derived))
    ((path, reason),) = report.damaged
    assert path == damaged and reason.startswith("line 2 is not a document")
    assert report.truncated == [journal_path(journal, cut[0][1]["uid"])]
    raw = catalog_client["raw"]
    assert raw[good[0][1]["uid"]].metadata["stop"]["exit_status"] == "success"
    assert len(raw[good[0][1]["uid"]]["primary"].read()["motor"]) == 3
    recovered_cut = raw[cut[0][1]["uid"]]
    assert recovered_cut.metadata["stop"]["exit_status"] == "fail"  # the closing stop
    assert len(recovered_cut["primary"].read()["motor"]) == 5  # every intact event (the 6th was cut)
    assert derived[0][1]["uid"] in catalog_client["derived"] and bad[0][1]["uid"] not in raw

    again = recover(journal, catalog_client)
    assert again.written == [] and again.complete == [] and again.damaged == report.damaged
    assert pending_journals(journal) == [damaged]
    assert len(raw) == 2


def test_recover_replaces_a_partial_run_and_skips_a_complete_one(catalog_client, tmp_path):
    journal = tmp_path / "journal"
    journal.mkdir()
    partial, complete = _run_documents(num=4), _run_documents(num=2)
    writer = TiledWriter(catalog_client["raw"])
    writer(*partial[0])  # the catalog took the start, then went down
    for entry in complete:
        writer(*entry)
    _write(journal_path(journal, partial[0][1]["uid"]), partial)
    _write(journal_path(journal, complete[0][1]["uid"]), complete)
    report = recover(journal, catalog_client)
    assert report.written == [partial[0][1]["uid"]] and report.complete == [complete[0][1]["uid"]]
    run = catalog_client["raw"][partial[0][1]["uid"]]
    assert run.metadata["stop"]["exit_status"] == "success" and len(run["primary"].read()["motor"]) == 4


def test_a_document_the_disk_refuses_waits_in_memory_and_is_written_in_order_later(tmp_path):
    docs = _run_documents(num=3)
    blocked = journal_path(tmp_path, docs[0][1]["uid"])
    blocked.mkdir()  # the run's file cannot be opened for writing (an OSError, as a full disk gives)
    journal = Journal(tmp_path)
    assert journal(*docs[0]) is False and journal(*docs[1]) is False
    assert journal.backlog == 2 and isinstance(journal.error, OSError)
    blocked.rmdir()  # the disk takes writes again
    for entry in docs[2:]:
        assert journal(*entry)
    assert journal.backlog == 0 and journal.error is None
    assert read_journal(blocked).documents == _as_json(docs)


class _Forwarder:
    """A stand-in for CatalogForwarder: records documents, reachable or not."""

    def __init__(self, reachable: bool):
        self.documents: list = []
        self._reachable = reachable

    def __call__(self, name, doc):
        self.documents.append((name, doc))

    def reachable(self) -> bool:
        return self._reachable


@pytest.mark.parametrize("catalog_up", [True, False])
def test_recorder_reports_a_storage_failure_only_when_neither_store_takes_documents(tmp_path, catalog_up):
    docs = _run_documents(num=2)
    journal_path(tmp_path, docs[0][1]["uid"]).mkdir()  # the journal cannot write
    failures, recoveries = [], []
    forwarder = _Forwarder(reachable=catalog_up)
    recorder = DocumentRecorder(Journal(tmp_path), forwarder, on_failure=failures.append,
                                on_recovered=lambda: recoveries.append(True))
    for entry in docs[:-1]:
        recorder(*entry)
    assert forwarder.documents == docs[:-1]  # the catalog is offered every document regardless
    if catalog_up:
        recorder(*docs[-1])
        assert failures == []
        return
    assert len(failures) == len(docs) - 1
    assert "journal cannot write" in failures[0] and "catalog is unreachable" in failures[0]
    assert str(tmp_path) in failures[0] and "RE.resume()" in failures[0]
    with pytest.raises(StorageError, match="STORAGE FAILURE"):  # a stop cannot be paused: the run fails
        recorder(*docs[-1])
    journal_path(tmp_path, docs[0][1]["uid"]).rmdir()
    recorder(*_run_documents(num=1)[0])  # the next document is written, with the backlog
    assert recoveries == [True]
