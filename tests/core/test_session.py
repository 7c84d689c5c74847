"""The beamline session: embedded catalog, metadata persistence, guarded live analysis."""

from __future__ import annotations

import numpy as np
import pytest

from nanostrain.callbacks.derived import GuardedCallback
from nanostrain.session import make_session

from ..conftest import API_KEY


@pytest.fixture
def session(tmp_path):
    s = make_session(data_dir=tmp_path / "data", api_key=API_KEY)
    yield s
    s.close()


def test_session_runs_a_plan_into_its_catalog_with_derived_results(session):
    d = session.devices
    (uid,) = session.RE(session.plans["alignment_scan"](d["cam"], d["sx"], -0.5, 0.5, 5, monitor=d["i0"]))
    assert uid in session.catalog
    (derived,) = session.derived_runs(uid)
    stats = derived["frame_stats"].read()
    assert np.allclose(stats["centroid_col"], 48 + 20 * np.asarray(stats["sx"]), atol=0.3)
    # a replay written back is the same computation: it replaces the live derived run
    session.replay(uid, write=True)
    (replayed,) = session.derived_runs(uid)
    assert replayed.metadata["start"]["uid"] != derived.metadata["start"]["uid"]
    assert np.array_equal(replayed["frame_stats"].read()["total"], stats["total"])


def test_metadata_persists_between_sessions(tmp_path):
    first = make_session(data_dir=tmp_path / "data", api_key=API_KEY)
    first.RE.md["proposal"] = "NS-2026-001"
    first.close()
    second = make_session(data_dir=tmp_path / "data", api_key=API_KEY)
    try:
        assert second.RE.md["proposal"] == "NS-2026-001"
    finally:
        second.close()


def test_a_failing_analysis_does_not_stop_the_experiment():
    calls = []

    def broken(name, doc):
        calls.append(name)
        if name == "descriptor":
            raise RuntimeError("boom")

    guard = GuardedCallback(broken)
    for name in ["start", "descriptor", "event", "stop", "start", "descriptor"]:
        guard(name, {})
    assert calls == ["start", "descriptor", "start", "descriptor"]
    assert len(guard.errors) == 2
