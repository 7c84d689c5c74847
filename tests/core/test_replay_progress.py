"""The replay's progress bar counts each frame of a run once, however many analyses read
it and whether any reads it, and counts events when a run has no frames."""

from __future__ import annotations

import io

import numpy as np

from nanostrain.replaying import ReplayProgress


class MemoryFrames:
    """A frame source over frames in memory (the `FrameSource` protocol)."""

    def iter_frames(self, stream, resource, datum):
        for seq_num in range(datum["seq_nums"]["start"], datum["seq_nums"]["stop"]):
            yield seq_num, np.full((2, 2), seq_num)


def datum(start: int, stop: int, resource: str = "r") -> dict:
    return {"stream_resource": resource, "indices": {"start": start, "stop": stop},
            "seq_nums": {"start": start + 1, "stop": stop + 1}}


def test_frames_count_once_while_read_and_when_dispatched():
    documents = [("start", {}), ("stream_datum", datum(0, 4)), ("stream_datum", datum(4, 10)), ("stop", {})]
    progress = ReplayProgress(documents, enabled=True, file=io.StringIO())
    frames = progress.counting(MemoryFrames())
    assert (progress.unit, progress.bar.total) == ("frame", 10)

    first = list(frames.iter_frames("primary", {}, datum(0, 4)))  # one analysis reads them...
    second = list(frames.iter_frames("primary", {}, datum(0, 4)))  # ...and another
    assert [s for s, _ in first] == [s for s, _ in second] == [1, 2, 3, 4] and progress.bar.n == 4
    progress.dispatched("stream_datum", datum(0, 4))
    assert progress.bar.n == 4
    progress.dispatched("stream_datum", datum(4, 10))  # frames no analysis read
    assert progress.bar.n == 10
    progress.close()


def test_a_run_without_frames_counts_its_events():
    documents = [("event", {"seq_num": 1}), ("event_page", {"seq_num": [2, 3, 4]}), ("stop", {})]
    progress = ReplayProgress(documents, enabled=True, file=io.StringIO())
    assert (progress.unit, progress.bar.total) == ("event", 4)
    for name, doc in documents:
        progress.dispatched(name, doc)
    assert progress.bar.n == 4
    progress.close()


def test_disabled_or_not_a_terminal_writes_nothing():
    for enabled in (False, None):
        out = io.StringIO()
        progress = ReplayProgress([("stream_datum", datum(0, 3))], enabled=enabled, file=out)
        progress.dispatched("stream_datum", datum(0, 3))
        progress.close()
        assert out.getvalue() == ""
