"""Frame sources: the HDF5 file a detector is still writing, and the catalog."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nanostrain.analysis.frames import clipped_mean, frame_statistics
from nanostrain.callbacks.frames import DetectorFileError, HDF5FrameSource, check_frames, resource_path, written_frames


def test_hdf5_source_reads_frames_of_a_file_still_being_written(tmp_path):
    path = tmp_path / "det.h5"
    writer = h5py.File(path, "w", libver="latest")
    data = writer.create_dataset("/entry/data/data", shape=(0, 3, 3), maxshape=(None, 3, 3), dtype="u4")
    writer.swmr_mode = True
    resource = {"uid": "r1", "uri": f"file://localhost{path}", "parameters": {"dataset": "/entry/data/data"}}
    source = HDF5FrameSource(chunk=2)
    got = []
    for i in range(5):
        data.resize(i + 1, axis=0)
        data[i] = i
        data.flush()
        datum = {"seq_nums": {"start": i + 1, "stop": i + 2}, "indices": {"start": i, "stop": i + 1}}
        got += [(seq, int(frame[0, 0])) for seq, frame in source.iter_frames("primary", resource, datum)]
    source.close()
    writer.close()
    assert got == [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]


def test_hdf5_source_reads_a_range_in_chunks(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f["d"] = np.arange(7)[:, None, None] * np.ones((7, 2, 2))
    resource = {"uid": "r", "uri": f"file://localhost{path}", "parameters": {"dataset": "d"}}
    datum = {"seq_nums": {"start": 3, "stop": 8}, "indices": {"start": 2, "stop": 7}}
    pairs = [(s, f[0, 0]) for s, f in HDF5FrameSource(chunk=2).iter_frames("primary", resource, datum)]
    assert pairs == [(3, 2.0), (4, 3.0), (5, 4.0), (6, 5.0), (7, 6.0)]


def test_resource_path_decodes_file_uris():
    assert str(resource_path({"uri": "file://localhost/data/a%20b.h5"})) == "/data/a b.h5"


def test_frame_statistics_finds_a_gaussian_spot_at_its_centre():
    rng = np.random.default_rng(0)
    rows, cols = np.indices((64, 96))
    frame = rng.poisson(2.5 + 1000 * np.exp(-((rows - 20.0) ** 2 + (cols - 70.0) ** 2) / 18))
    stats = frame_statistics(frame)
    assert abs(stats.centroid_row - 20.0) < 0.1 and abs(stats.centroid_col - 70.0) < 0.1
    assert abs(stats.total - 1000 * np.pi * 18) / (1000 * np.pi * 18) < 0.02


def test_clipped_mean_ignores_a_bright_feature():
    values = np.full(1000, 10.0)
    values[:20] = 1e6
    assert clipped_mean(values) == 10.0


def test_empty_frame_has_no_centroid():
    stats = frame_statistics(np.zeros((4, 4)), background=0.0)
    assert stats.total == 0.0 and np.isnan(stats.centroid_col)


def _run_on_file(path, callback) -> None:
    """A raw run of 3 events whose frames are in ``path`` (dataset /d), through ``callback``."""
    from .test_derived import raw_run

    for name, doc in raw_run(3, frames_first=True):
        if name == "stream_resource":
            doc = {**doc, "uri": f"file://localhost{path}"}
        callback(name, doc)


def _frames_file(path):
    with h5py.File(path, "w", libver="latest") as f:
        f["d"] = np.arange(3)[:, None, None] * np.ones((3, 2, 2))


def test_the_hdf5_file_is_closed_at_the_raw_stop(tmp_path):
    from .test_derived import SumRows

    path = tmp_path / "det.h5"
    _frames_file(path)
    callback = SumRows(frame_source=HDF5FrameSource())
    sums = []
    callback.subscribe(lambda name, doc: sums.append(doc["data"]["frame_sum"]) if name == "event" else None)
    _run_on_file(path, callback)
    assert sums == [0.0, 4.0, 8.0]
    with h5py.File(path, "w"):  # HDF5 refuses to truncate a file this process still has open
        pass
    path.unlink()


def test_the_hdf5_file_is_closed_when_the_analysis_fails(tmp_path):
    from .test_derived import SumRows

    class Broken(SumRows):
        def process_row(self, seq_num, data, frame):
            raise RuntimeError("bad row")

    path = tmp_path / "det.h5"
    _frames_file(path)
    with pytest.raises(RuntimeError, match="bad row"):
        _run_on_file(path, Broken(frame_source=HDF5FrameSource()))
    with h5py.File(path, "w"):
        pass


def test_masked_pixels_are_left_out_of_the_statistics():
    frame = np.zeros((5, 5))
    frame[1, 3] = 10.0
    frame[4, 0] = np.nan
    mask = ~np.isfinite(frame)
    stats = frame_statistics(frame, background=0.0, mask=mask)
    assert (stats.total, stats.maximum, stats.centroid_row, stats.centroid_col) == (10.0, 10.0, 1.0, 3.0)


def test_frame_statistics_record_each_frames_quality_and_skip_bad_ones():
    from event_model import compose_run

    from nanostrain.callbacks.frame_stats import FrameStatisticsCallback

    spot = np.zeros((4, 6), dtype=np.uint32)
    spot[2, 4] = 100
    speckled = spot.astype(float)
    speckled[0, 0] = np.nan
    frames = [spot, np.full((4, 6), np.nan), np.zeros((4, 6), dtype=np.uint32), np.ones((3, 3)), speckled]

    class Frames:
        def iter_frames(self, stream, resource, datum):
            yield datum["seq_nums"]["start"], frames[datum["seq_nums"]["start"] - 1]

    bundle = compose_run(metadata={"technique": "alignment", "plan_name": "alignment_scan", "image_key": "cam"})
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "cam": {"dtype": "array", "shape": [1, 4, 6], "source": "cam", "external": "STREAM:"}})
    callback, out = FrameStatisticsCallback(frame_source=Frames()), []
    callback.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc),
                      ("stream_resource", {"uid": "r", "data_key": "cam"})]:
        callback(name, doc)
    for i in range(1, len(frames) + 1):
        callback("stream_datum", {"stream_resource": "r", "descriptor": desc.descriptor_doc["uid"],
                                  "seq_nums": {"start": i, "stop": i + 1}, "indices": {"start": i - 1, "stop": i}})
        callback("event", desc.compose_event(data={}, timestamps={}))
    callback("stop", bundle.compose_stop())
    rows = [doc["data"] for name, doc in out if name == "event"]
    assert [row["quality_status"] for row in rows] == ["ok", "bad", "no_signal", "bad", "ok"]
    assert rows[3]["quality_reason"] == "wrong shape (3, 3), the detector is (4, 6)"
    assert all(np.isnan(rows[i]["total"]) for i in (1, 3)) and np.isnan(rows[2]["centroid_col"])
    assert (rows[4]["total"], rows[4]["centroid_row"], rows[4]["centroid_col"], rows[4]["n_nonfinite"]) == (100.0, 2.0, 4.0, 1)
    assert [doc for name, doc in out if name == "stop"][0]["exit_status"] == "success"


@pytest.mark.parametrize("depth", [1, 2])
def test_frames_never_written_are_found_in_one_pass_over_the_chunk_index(tmp_path, depth):
    path = tmp_path / "gaps.h5"
    with h5py.File(path, "w") as handle:
        chunked = handle.create_dataset("data", shape=(6, 4, 4), dtype=np.uint16, chunks=(depth, 2, 4))
        chunked[0] = 1  # frame 0; with depth 2 its chunk holds frame 1 too
        chunked[4, 2:] = 1  # only frame 4's second half: its first pixel's chunk is missing
        handle.create_dataset("plain", data=np.ones((3, 4, 4)))
    with h5py.File(path, "r") as handle:
        written = written_frames(handle["data"])
        assert written.tolist() == [True, depth == 2, False, False, False, False]
        assert written_frames(handle["plain"]) is None
        for mask in (written, None):  # one pass, or a lookup per frame (a file still growing)
            with pytest.raises(DetectorFileError, match=r"frames \[2, 3, 4\] were never written"):
                check_frames(path, handle["data"], range(2, 5), mask)
        check_frames(path, handle["data"], range(0, depth), written)  # frame 0 (and 1 in its chunk)
