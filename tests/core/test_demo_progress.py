"""The demo's progress lines: what a step is doing, from the documents of its runs.

A real RunEngine runs bluesky's ``count`` over ophyd's simulated detector; the
`Heartbeat` subscribed to it follows the run; `ticking` prints the label and the
closing line (the periodic lines come from a thread every `HEARTBEAT_S` seconds).
"""

from __future__ import annotations

import bluesky.plans as bp
from bluesky import RunEngine
from ophyd.sim import det

from nanostrain.demo import Heartbeat, ticking


def test_heartbeat_counts_the_events_of_the_current_run():
    RE = RunEngine({})
    heartbeat = Heartbeat(RE)
    RE(bp.count([det], num=2))

    RE(bp.count([det], num=3))

    assert heartbeat.status() == "count: 3 events"


def test_heartbeat_counts_detector_frames_from_stream_datums():
    heartbeat = Heartbeat(RunEngine({}))
    heartbeat._document("start", {"plan_name": "fly"})
    for start, stop in ((0, 4), (4, 10)):
        heartbeat._document("stream_datum", {"stream_resource": "r1", "indices": {"start": start, "stop": stop}})
        heartbeat._document("stream_datum", {"stream_resource": "r2", "indices": {"start": start, "stop": stop}})

    assert heartbeat.status() == "fly: 0 events, 10 detector frames"  # two resources, one detector's frames


def test_ticking_prints_the_label_then_how_long_the_block_took(capsys):
    with ticking("operando XRD of SC-NM91", lambda: "12 events"):
        pass

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "   operando XRD of SC-NM91"
    assert lines[-1] == "      operando XRD of SC-NM91: done in 0 s, 12 events"
