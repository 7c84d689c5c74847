"""Derived-run lifecycle: whatever an analysis raises closes its derived run as failed,
with one stop document naming the error, and the rest of that raw run is ignored."""

from __future__ import annotations

import pytest
from event_model import compose_run

from nanostrain.callbacks.derived import GuardedCallback

from .test_derived import FakeFrames, SumRows, raw_run


class Fails(SumRows):
    """SumRows that raises ZeroDivisionError in the hook named ``where`` (on row 2 for rows)."""

    def __init__(self, where: str, **kwargs):
        super().__init__(**kwargs)
        self.where = where

    def open_run(self, start):
        if self.where == "open_run":
            raise ZeroDivisionError("no geometry")

    def process_row(self, seq_num, data, frame):
        if self.where == "process_row" and seq_num == 2:
            raise ZeroDivisionError("singular fit")
        super().process_row(seq_num, data, frame)

    def finish(self):
        if self.where == "finish":
            raise ZeroDivisionError("fit diverged")


class BrokenFrames(FakeFrames):
    def iter_frames(self, stream, resource, datum):
        if datum["seq_nums"]["start"] == 2:
            raise OSError("frame file vanished")
        yield from super().iter_frames(stream, resource, datum)


def guarded_run(callback, docs):
    out = []
    callback.subscribe(lambda name, doc: out.append((name, doc)))
    guard = GuardedCallback(callback)
    for name, doc in docs:
        guard(name, doc)
    return out, guard


@pytest.mark.parametrize(
    "callback, error, events_before",
    [
        (Fails("open_run", frame_source=FakeFrames()), "ZeroDivisionError: no geometry", 0),
        (Fails("process_row", frame_source=FakeFrames()), "ZeroDivisionError: singular fit", 1),
        (Fails("finish", frame_source=FakeFrames()), "ZeroDivisionError: fit diverged", 4),
        (Fails("none", frame_source=BrokenFrames()), "OSError: frame file vanished", 1),
    ],
    ids=["open_run", "process_row", "finish", "frame_reading"],
)
def test_any_failure_closes_the_derived_run_once_as_failed(callback, error, events_before):
    out, guard = guarded_run(callback, raw_run(4, frames_first=True))
    names = [name for name, _ in out]
    assert names.count("start") == 1 and names.count("stop") == 1 and names[-1] == "stop"
    assert names.count("event") == events_before  # nothing after the failure
    stop = out[-1][1]
    assert stop["exit_status"] == "fail" and error in stop["reason"]
    assert [type(e).__name__ for e in guard.errors] == [error.split(":")[0]]


def test_after_a_failed_run_the_next_run_is_analysed_normally():
    callback = Fails("process_row", frame_source=FakeFrames())
    out, guard = guarded_run(callback, raw_run(4, True))
    callback.where = "none"
    second = []
    callback.subscribe(lambda name, doc: second.append((name, doc)))
    for name, doc in raw_run(3, True):
        guard(name, doc)
    assert [n for n, _ in second] == ["start", "descriptor", "event", "event", "event", "stop"]
    assert second[-1][1]["exit_status"] == "success" and len(guard.errors) == 1


def test_a_raw_run_without_a_stop_gets_its_derived_run_closed_at_the_next_start():
    callback = SumRows(frame_source=FakeFrames())
    out = []
    callback.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in raw_run(2, True)[:-1] + raw_run(2, True):
        callback(name, doc)
    stops = [doc for name, doc in out if name == "stop"]
    assert [s["exit_status"] for s in stops] == ["fail", "success"]
    assert "without a stop document" in stops[0]["reason"]


def test_a_run_missing_contract_metadata_fails_its_derived_run_saying_what_is_missing():
    class XrdRows(SumRows):
        techniques = ("xrd",)

    bundle = compose_run(metadata={"technique": "xrd", "image_key": "cam", "active_mass_g": 1e-3,
                                   "echem_keys": {}})  # no xrd_geometry
    out, guard = guarded_run(XrdRows(frame_source=FakeFrames()), [("start", bundle.start_doc),
                                                                   ("stop", bundle.compose_stop())])
    assert [n for n, _ in out] == ["start", "stop"]
    assert out[-1][1]["exit_status"] == "fail" and "xrd_geometry" in out[-1][1]["reason"]
    assert type(guard.errors[0]).__name__ == "StartDocumentError"
