"""Large arrays of derived runs as chunked HDF5 files: `ExternalArrays` (documents) with
`HDF5ArraySink` (files): documents valid, files equal to the arrays, small values inline;
`remove_run_folder` deletes a superseded run's files and nothing else."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import h5py
import hdf5plugin  # noqa: F401 - the bitshuffle filter of the files
import numpy as np
import pytest
from event_model import DocumentNames, schema_validators

from nanostrain.callbacks.derived import DerivedRun
from nanostrain.callbacks.external_arrays import DEFAULT_MIN_BYTES, ExternalArrays, external_keys
from nanostrain.callbacks.frames import resource_path
from nanostrain.derived_files import HDF5ArraySink, remove_run_folder

from ..conftest import in_process_client

RAW_START = {"uid": "raw-0001", "time": 0.0, "sample": "SC-NM91"}
NPT = 1000  # an I(Q) pattern of 1000 float64: 8000 bytes, above the 1 KiB threshold


def patterns(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.random((n, NPT))


def derived_documents(sink, n: int = 6) -> tuple[list[tuple[str, dict]], str]:
    """A derived run of ``n`` XRD-like events (``raw_seq_num``, a small ``q_range`` vector,
    an ``intensity`` pattern) and one map, through `ExternalArrays` if ``sink``."""
    out: list[tuple[str, dict]] = []
    emit = (lambda name, doc: out.append((name, doc)))
    run = DerivedRun(ExternalArrays(sink, emit) if sink else emit, RAW_START, "test", {})
    for seq, intensity in enumerate(patterns(n), start=1):
        run.event("patterns", {"raw_seq_num": seq, "q_range": np.array([0.5, 4.0]), "intensity": intensity})
    run.event("maps", {"strain": np.arange(40 * 30, dtype=float).reshape(40, 30), "mask": np.ones((4, 4), np.uint8)})
    run.stop()
    return out, run.uid


def stream_of(out, stream: str) -> str:
    return next(doc["uid"] for name, doc in out if name == "descriptor" and doc["name"] == stream)


def test_large_arrays_go_to_files_and_every_document_is_valid(tmp_path):
    out, uid = derived_documents(HDF5ArraySink(tmp_path / "derived"))
    for name, doc in out:
        schema_validators[DocumentNames(name)].validate(doc)
    resources = {doc["data_key"]: doc for name, doc in out if name == "stream_resource"}
    assert set(resources) == {"intensity", "strain"}  # q_range (16 B) and mask (16 B) stay inline
    (descriptor,) = [doc for name, doc in out if name == "descriptor" and doc["name"] == "patterns"]
    assert descriptor["data_keys"]["intensity"]["external"] == "STREAM:"
    assert "external" not in descriptor["data_keys"]["q_range"]
    intensity = resources["intensity"]
    assert intensity["mimetype"] == "application/x-hdf5" and intensity["run_start"] == uid
    assert resource_path(intensity) == tmp_path / "derived" / uid / "patterns.h5"
    assert intensity["parameters"]["dataset"] == "/entry/data/intensity"
    assert intensity["parameters"]["chunk_shape"] == [1, NPT]  # one event per chunk, as detectors write
    with h5py.File(resource_path(intensity), "r") as handle:
        np.testing.assert_array_equal(handle[intensity["parameters"]["dataset"]][()], patterns(6))
    with h5py.File(resource_path(resources["strain"]), "r") as handle:
        np.testing.assert_array_equal(handle["/entry/data/strain"][0], np.arange(1200.0).reshape(40, 30))


def test_each_event_keeps_its_small_values_and_is_preceded_by_its_datum(tmp_path):
    out, _ = derived_documents(HDF5ArraySink(tmp_path))
    patterns_uid = stream_of(out, "patterns")
    names = [name for name, doc in out if doc.get("descriptor") == patterns_uid]
    assert names == ["stream_datum", "event"] * 6
    events = [doc for name, doc in out if name == "event" and doc["descriptor"] == patterns_uid]
    datums = [doc for name, doc in out if name == "stream_datum"][:6]
    assert [set(e["data"]) for e in events] == [{"raw_seq_num", "q_range"}] * 6
    assert set(events[0]["timestamps"]) == {"raw_seq_num", "q_range"}
    assert [(d["indices"]["start"], d["seq_nums"]["start"]) for d in datums] == [(i, i + 1) for i in range(6)]
    assert [e["seq_num"] for e in events] == [1, 2, 3, 4, 5, 6]


def test_without_a_sink_the_documents_are_as_before(tmp_path):
    out, _ = derived_documents(None)
    assert not any(name.startswith("stream_") for name, _ in out)
    events = [doc for name, doc in out if name == "event" and doc["descriptor"] == stream_of(out, "patterns")]
    np.testing.assert_array_equal([e["data"]["intensity"] for e in events], patterns(6))


def test_the_threshold_is_per_event_bytes_of_numeric_fixed_shape_arrays():
    keys = {
        "big": {"dtype": "array", "shape": [128], "dtype_numpy": "<f8", "source": "s"},  # 1024 B
        "small": {"dtype": "array", "shape": [127], "dtype_numpy": "<f8", "source": "s"},
        "image": {"dtype": "array", "shape": [32, 32], "dtype_numpy": "|u1", "source": "s"},  # 1024 B
        "ragged": {"dtype": "array", "shape": [None], "dtype_numpy": "<f8", "source": "s"},
        "text": {"dtype": "array", "shape": [4096], "dtype_numpy": "<U8", "source": "s"},
        "scalar": {"dtype": "number", "shape": [], "dtype_numpy": "<f8", "source": "s"},
    }
    assert set(external_keys({"data_keys": keys}, DEFAULT_MIN_BYTES)) == {"big", "image"}


def test_an_array_of_another_shape_than_declared_is_refused(tmp_path):
    run = DerivedRun(ExternalArrays(HDF5ArraySink(tmp_path), lambda name, doc: None), RAW_START, "test", {})
    run.event("patterns", {"intensity": np.zeros(NPT)})
    with pytest.raises(ValueError, match=r"'intensity' has shape \(999,\); its descriptor declared \(1000,\)"):
        run.event("patterns", {"intensity": np.zeros(NPT - 1)})


def test_a_stream_name_that_is_no_file_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="stream '../x'"):
        HDF5ArraySink(tmp_path).open("uid", "../x", {"a": ((NPT,), np.dtype("<f8"))})


KILLED_WRITER = """
import json, os, sys
import numpy as np
from nanostrain.callbacks.derived import DerivedRun
from nanostrain.callbacks.external_arrays import ExternalArrays
from nanostrain.derived_files import HDF5ArraySink

def emit(name, doc):
    print(json.dumps([name, doc]), flush=True)

run = DerivedRun(ExternalArrays(HDF5ArraySink(sys.argv[1]), emit), {"uid": "raw-0001", "time": 0.0}, "test", {})
for seq in range(1, 4):
    run.event("patterns", {"raw_seq_num": seq, "intensity": np.full(1000, float(seq))})
os._exit(0)  # killed mid-run: no stop, the file never closed
"""


def test_a_writer_killed_mid_run_leaves_every_row_its_datums_name(tmp_path):
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], capture_output=True, text=True,
                            timeout=120, check=True)
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    (resource,) = [doc for name, doc in documents if name == "stream_resource"]
    datums = [doc for name, doc in documents if name == "stream_datum"]
    assert len(datums) == 3 and not any(name == "stop" for name, _ in documents)
    with h5py.File(resource_path(resource), "r", swmr=True) as handle:
        stored = handle[resource["parameters"]["dataset"]]
        for datum in datums:
            row = datum["indices"]["start"]
            np.testing.assert_array_equal(stored[row], np.full(1000, float(datum["seq_nums"]["start"])))


def xas_like_run(emit) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    """An XAS-like derived run through ``emit``: names reused across streams, each first
    declared as a scalar (``energy_eV`` in ``points``) or as a large array (``r_A`` in
    ``exafs``, a scalar in ``fit``). Its uid and the values (stream -> key -> events)."""
    energies = np.linspace(8300.0, 8500.0, 300)
    streams = {
        "points": {"energy_eV": energies[:3], "mu": np.array([0.1, 0.2, 0.3])},
        "spectrum": {"energy_eV": energies[None], "mu": np.linspace(0, 1, 300)[None]},
        "exafs": {"r_A": np.linspace(0, 10, 400)[None], "chir_mag": np.linspace(1, 0, 400)[None]},
        "fit": {"r_A": np.array([1.95]), "sigma2_A2": np.array([0.005])},
    }
    run = DerivedRun(emit, RAW_START, "xas_like", {})
    for stream, values in streams.items():
        for row in range(len(next(iter(values.values())))):
            run.event(stream, {key: value[row] for key, value in values.items()})
    run.stop()
    return run.uid, streams


def test_a_name_keeps_the_place_its_first_stream_gave_it(tmp_path):
    out: list[tuple[str, dict]] = []
    xas_like_run(ExternalArrays(HDF5ArraySink(tmp_path), lambda name, doc: out.append((name, doc))))
    external = {doc["name"]: {k for k, spec in doc["data_keys"].items() if "external" in spec}
                for name, doc in out if name == "descriptor"}
    # energy_eV and mu: scalars first, so inline everywhere; r_A: an array first, so a file holds the fit's too
    assert external == {"points": set(), "spectrum": set(), "exafs": {"r_A", "chir_mag"}, "fit": {"r_A"}}


def test_a_name_reused_across_streams_reads_back_from_the_catalog_as_written(sqlite_settings):
    """TiledWriter keeps a run's external names across streams: a later inline key of an
    external name would fail validation (an XAS derived run: ``r_A`` in exafs and fit)."""
    from bluesky_tiled_plugins import TiledWriter

    from nanostrain.catalog import catalog_nodes

    client = in_process_client(sqlite_settings)
    try:
        _, derived = catalog_nodes(client)
        uid, streams = xas_like_run(ExternalArrays(HDF5ArraySink(sqlite_settings.derived_dir), TiledWriter(derived)))
        run = derived[uid]
        for stream, values in streams.items():
            for key, value in values.items():
                np.testing.assert_array_equal(run[stream][key].read(), value)
        assert (sqlite_settings.derived_dir / uid / "fit.h5").is_file()
    finally:
        client.context.close()


def test_a_key_no_file_can_hold_under_an_external_name_is_refused(tmp_path):
    run = DerivedRun(ExternalArrays(HDF5ArraySink(tmp_path), lambda name, doc: None), RAW_START, "test", {})
    run.event("exafs", {"r_A": np.zeros(NPT)})
    with pytest.raises(ValueError, match="stream 'fit': data key 'r_A' is external in an earlier stream"):
        run.event("fit", {"r_A": "first shell"})


def test_the_place_of_a_name_declared_earlier_wins_over_its_size():
    big = {"dtype": "array", "shape": [NPT], "dtype_numpy": "<f8", "source": "s"}
    scalar = {"dtype": "number", "shape": [], "dtype_numpy": "<f8", "source": "s"}
    descriptor = {"name": "later", "data_keys": {"was_inline": big, "was_external": scalar, "new": big}}
    chosen = external_keys(descriptor, DEFAULT_MIN_BYTES, {"was_inline": False, "was_external": True})
    assert chosen == {"was_external": ((), np.dtype("<f8")), "new": ((NPT,), np.dtype("<f8"))}


def test_removing_a_run_folder_takes_that_folder_only(tmp_path):
    for uid in ("old", "new"):
        (tmp_path / uid).mkdir()
        (tmp_path / uid / "patterns.h5").write_bytes(b"x")
    assert remove_run_folder(tmp_path, "old") is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]
    assert remove_run_folder(tmp_path, "old") is False  # nothing left to remove


@pytest.mark.parametrize("uid", ["a/b", "..", "../outside", "a/../b", "/abs", "."])
def test_a_uid_that_is_no_plain_name_removes_nothing(tmp_path, uid):
    derived, outside = tmp_path / "derived", tmp_path / "outside"
    for folder in (derived / "a" / "b", derived / "b", outside, tmp_path / "abs"):
        folder.mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="derived run uid"):
        remove_run_folder(derived, uid)
    assert sorted(tmp_path.rglob("*")) == before


def test_a_symbolic_link_named_like_the_run_is_not_followed(tmp_path):
    derived, outside = tmp_path / "derived", tmp_path / "outside"
    derived.mkdir()
    outside.mkdir()
    (outside / "keep.h5").write_bytes(b"x")
    (derived / "uid-1").symlink_to(outside, target_is_directory=True)
    assert remove_run_folder(derived, "uid-1") is False
    assert (derived / "uid-1").is_symlink() and (outside / "keep.h5").is_file()


def test_a_superseded_derived_run_takes_its_files_with_it(sqlite_settings):
    """Through the catalog: a failed recomputation deletes nothing; a successful one
    deletes the older runs of its computation and their folders, and keeps its own."""
    from bluesky_tiled_plugins import TiledWriter

    from nanostrain.catalog import catalog_nodes
    from nanostrain.schema.catalog import SupersedingWriter

    folder = sqlite_settings.derived_dir
    client = in_process_client(sqlite_settings)
    try:
        _, derived = catalog_nodes(client)
        writer = SupersedingWriter(TiledWriter(derived), derived,
                                   on_deleted=functools.partial(remove_run_folder, folder))
        record = ExternalArrays(HDF5ArraySink(folder), writer)

        def derived_run(exit_status: str) -> str:
            run = DerivedRun(record, RAW_START, "test", {})
            run.event("patterns", {"intensity": patterns(1)[0]})
            run.stop(exit_status)
            writer.flush()
            return run.uid

        first, failed = derived_run("success"), derived_run("fail")
        assert (folder / first).is_dir() and (folder / failed).is_dir() and not writer.superseded
        again = derived_run("success")
        assert sorted(writer.superseded) == sorted([first, failed])
        assert sorted(p.name for p in folder.iterdir()) == [again]
        np.testing.assert_array_equal(derived[again]["patterns"]["intensity"].read()[0], patterns(1)[0])
    finally:
        client.context.close()


def test_a_failing_clean_up_is_logged_and_the_other_superseded_runs_still_go(sqlite_settings, caplog):
    from bluesky_tiled_plugins import TiledWriter

    from nanostrain.catalog import catalog_nodes
    from nanostrain.schema.catalog import SupersedingWriter

    called: list[str] = []

    def clean_up(uid: str) -> None:
        called.append(uid)
        raise OSError("disk gone")

    client = in_process_client(sqlite_settings)
    try:
        _, derived = catalog_nodes(client)
        writer = SupersedingWriter(TiledWriter(derived), derived, on_deleted=clean_up)
        uids = []
        for exit_status in ("fail", "fail", "success"):  # the successful run supersedes both failed ones
            run = DerivedRun(writer, RAW_START, "test", {})
            run.event("stats", {"total": 1.0})
            run.stop(exit_status)
            writer.flush()
            uids.append(run.uid)
        assert sorted(called) == sorted(writer.superseded) == sorted(uids[:2])
        assert list(derived) == [uids[2]]
        assert caplog.text.count("clean-up failed (disk gone)") == 2
    finally:
        client.context.close()
