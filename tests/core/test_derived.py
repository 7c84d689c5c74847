"""The analysis-callback base: frame/event join in either order, derived-run documents."""

from __future__ import annotations

import numpy as np
import pytest
from event_model import DocumentNames, compose_run, schema_validators

from nanostrain.callbacks.derived import AnalysisCallback


class FakeFrames:
    """Frame source serving frames from memory: frame k is filled with value k."""

    def iter_frames(self, stream, resource, datum):
        for seq in range(datum["seq_nums"]["start"], datum["seq_nums"]["stop"]):
            yield seq, np.full((2, 2), float(seq))


class SumRows(AnalysisCallback):
    analysis = "sum_rows"

    def process_row(self, seq_num, data, frame):
        self.derived.event("rows", {"seq": seq_num, "x": data["x"], "frame_sum": float(frame.sum())})


def raw_run(n: int, frames_first: bool) -> list[tuple[str, dict]]:
    """A raw run with n events and one frame each; frames before (live) or after (replay)."""
    bundle = compose_run(metadata={"technique": "test", "image_key": "cam"})
    desc = bundle.compose_descriptor(
        name="primary",
        data_keys={"x": {"dtype": "number", "shape": [], "source": "x"},
                   "cam": {"dtype": "array", "shape": [2, 2], "source": "cam", "external": "STREAM:"}},
    )
    resource = bundle.compose_stream_resource(mimetype="application/x-hdf5", uri="file://localhost/x.h5",
                                              data_key="cam", parameters={"dataset": "/d"})
    docs = [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc), ("stream_resource", resource.stream_resource_doc)]
    events = [("event", desc.compose_event(data={"x": 0.5 * i}, timestamps={"x": 0.0})) for i in range(1, n + 1)]
    from event_model import StreamRange

    if frames_first:
        for i, event in enumerate(events, start=1):
            datum = resource.compose_stream_datum(indices=StreamRange(start=i - 1, stop=i))
            datum["seq_nums"] = {"start": i, "stop": i + 1}
            datum["descriptor"] = desc.descriptor_doc["uid"]
            docs += [("stream_datum", datum), event]
    else:
        datum = resource.compose_stream_datum(indices=StreamRange(start=0, stop=n))
        datum["seq_nums"] = {"start": 1, "stop": n + 1}
        datum["descriptor"] = desc.descriptor_doc["uid"]
        docs += events + [("stream_datum", datum)]
    return docs + [("stop", bundle.compose_stop())]


def run_through(callback, docs):
    out = []
    callback.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in docs:
        callback(name, doc)
    return out


@pytest.mark.parametrize("frames_first", [True, False])
def test_each_event_is_joined_with_its_own_frame(frames_first):
    out = run_through(SumRows(frame_source=FakeFrames()), raw_run(4, frames_first))
    rows = [doc["data"] for name, doc in out if name == "event"]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert [r["frame_sum"] for r in rows] == [4.0, 8.0, 12.0, 16.0]  # 2x2 frame of value seq
    assert [r["x"] for r in rows] == [0.5, 1.0, 1.5, 2.0]


def test_live_and_replay_orders_give_identical_results():
    live = run_through(SumRows(frame_source=FakeFrames()), raw_run(5, True))
    replayed = run_through(SumRows(frame_source=FakeFrames()), raw_run(5, False))
    data = lambda out: [doc["data"] for name, doc in out if name == "event"]  # noqa: E731
    assert data(live) == data(replayed)


def test_derived_run_documents_are_valid_and_linked_to_the_raw_run():
    docs = raw_run(3, True)
    out = run_through(SumRows(frame_source=FakeFrames()), docs)
    assert [n for n, _ in out] == ["start", "descriptor", "event", "event", "event", "stop"]
    for name, doc in out:
        schema_validators[DocumentNames(name)].validate(doc)
    assert out[0][1]["derived_from"] == docs[0][1]["uid"]
    assert out[0][1]["analysis"] == "sum_rows"


def test_runs_of_other_techniques_are_ignored():
    class OnlyXrd(SumRows):
        techniques = ("xrd",)

    assert run_through(OnlyXrd(frame_source=FakeFrames()), raw_run(2, True)) == []


def test_a_failing_analysis_closes_its_derived_run_as_failed():
    class Broken(SumRows):
        def finish(self):
            raise ArithmeticError("fit diverged")

    callback = Broken(frame_source=FakeFrames())
    out = []
    callback.subscribe(lambda name, doc: out.append((name, doc)))
    with pytest.raises(ArithmeticError):
        for name, doc in raw_run(2, True):
            callback(name, doc)
    assert out[-1][0] == "stop"
    assert out[-1][1]["exit_status"] == "fail" and "fit diverged" in out[-1][1]["reason"]


def test_live_values_are_soft_signals_plans_can_read():
    from bluesky import RunEngine
    import bluesky.plan_stubs as bps

    class Live(SumRows):
        def process_row(self, seq_num, data, frame):
            super().process_row(seq_num, data, frame)
            self.set_live("last_sum", float(frame.sum()))

    callback = Live(frame_source=FakeFrames())
    signal = callback.live_signal("last_sum", float, 0.0)
    run_through(callback, raw_run(3, True))
    RE = RunEngine({})
    seen = []

    def read_it():
        seen.append((yield from bps.rd(signal)))

    RE(read_it())
    assert seen == [12.0]
