"""Replay rebuilds the analyses a raw run was analysed with (recorded parameters), gives
the live results, writes no file; `from nanostrain import replay` is the function."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import h5py
import numpy as np
import pytest

from nanostrain.callbacks.frame_stats import FrameStatisticsCallback
from nanostrain.callbacks.frames import TiledFrameSource, resource_path
from nanostrain.callbacks.registry import ANALYSES, default_analyses
from nanostrain.callbacks.sxdm import SxdmCallback
from nanostrain.callbacks.txm import TxmXanesCallback
from nanostrain.callbacks.xrd import XrdCallback
from nanostrain.replaying import recorded_analyses, replay, run_documents
from nanostrain.session import make_session

from ..conftest import API_KEY

#: non-default settings the live frame statistics run with: no background subtraction
LIVE_BACKGROUND = 0.0


@pytest.mark.parametrize("analysis", default_analyses(), ids=lambda a: a.analysis)
def test_every_analysis_is_rebuilt_equal_from_its_parameters(analysis):
    rebuilt = type(analysis).from_parameters(analysis.parameters())
    assert type(rebuilt) is type(analysis) and rebuilt.parameters() == analysis.parameters()


@pytest.mark.parametrize(
    "analysis",
    [FrameStatisticsCallback(background=3.5), XrdCallback(npt=700, q_max=4.0, instrument_fwhm_deg=0.01),
     SxdmCallback(batch_frames=16, registration=False, mask_fraction=0.3, d_ref_A=4.7),
     TxmXanesCallback(smooth_voxels=2.0, denoise=False, bins=40)],
    ids=lambda a: a.analysis,
)
def test_non_default_parameters_survive_the_round_trip(analysis):
    rebuilt = type(analysis).from_parameters(analysis.parameters())
    assert rebuilt.parameters() == analysis.parameters() != type(analysis)().parameters()


class WithConstant(FrameStatisticsCallback):
    """Records a fixed window it is not constructed with (as a constant for the record)."""

    def parameters(self):
        return {**super().parameters(), "window": (1.0, 2.0)}


def test_a_recorded_constant_is_accepted_only_with_its_own_value():
    assert WithConstant.from_parameters({"background": 2.0, "window": [1.0, 2.0]}).background == 2.0
    with pytest.raises(ValueError, match="window"):
        WithConstant.from_parameters({"background": 2.0, "window": [1.0, 3.0]})
    with pytest.raises(ValueError, match="smoothing"):
        FrameStatisticsCallback.from_parameters({"background": 2.0, "smoothing": 3})


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    live = [FrameStatisticsCallback(background=LIVE_BACKGROUND)] + [
        cls() for name, cls in ANALYSES.items() if name != "frame_statistics"
    ]
    s = make_session(data_dir=tmp_path_factory.mktemp("replay") / "data", api_key=API_KEY,
                     persist_metadata=False, analyses=live)
    d = s.devices
    (uid,) = s.RE(s.plans["alignment_scan"](d["cam"], d["sx"], -0.5, 0.5, 5, monitor=d["i0"], exposure_s=0.05))
    s.uid = uid
    yield s
    s.close()


def _stats(published):
    return [doc["data"] for name, doc in published if name == "event"]


def test_replay_uses_the_recorded_parameters_and_reproduces_the_live_results(session):
    (derived,) = session.derived_runs(session.uid)
    assert derived.metadata["start"]["parameters"]["background"] == LIVE_BACKGROUND
    live_total = np.asarray(derived["frame_stats"].read()["total"])
    replayed = _stats(replay(session.catalog[session.uid]))
    assert np.array_equal([row["total"] for row in replayed], live_total)
    with_defaults = _stats(replay(session.catalog[session.uid], [FrameStatisticsCallback()]))
    assert not np.allclose([row["total"] for row in with_defaults], live_total)


def test_recorded_analyses_come_with_the_live_settings(session):
    analyses = recorded_analyses(session.catalog[session.uid])
    stats = [a for a in analyses if a.analysis == "frame_statistics"]
    assert [a.background for a in stats] == [LIVE_BACKGROUND]
    assert sorted(a.analysis for a in analyses) == sorted(ANALYSES)  # the others: defaults


def _tree(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_replay_writes_no_file(session):
    before = _tree(session.settings.data_dir)
    published = session.replay(session.uid)
    assert [n for n, _ in published].count("stop") == 1
    assert _tree(session.settings.data_dir) == before


def test_frames_from_the_file_and_through_the_catalog_are_the_detectors_in_any_block_size(session):
    """Datums of 2, 2 and 1 frames (as a fly scan's rows come) read in blocks of 2 frames
    (read ahead across datums), 3 frames and 64 MiB, from the file and through the
    catalog: every way yields each frame once, in seq_num order, as the file holds it."""
    run = session.catalog[session.uid]
    documents = run_documents(run)
    (resource,) = [doc for name, doc in documents if name == "stream_resource"]
    (whole,) = [doc for name, doc in documents if name == "stream_datum"]
    assert (whole["indices"], whole["seq_nums"]) == ({"start": 0, "stop": 5}, {"start": 1, "stop": 6})
    datums = [{**whole, "indices": {"start": lo, "stop": hi}, "seq_nums": {"start": lo + 1, "stop": hi + 1}}
              for lo, hi in ((0, 2), (2, 4), (4, 5))]
    with h5py.File(resource_path(resource), "r") as handle:
        truth = handle[resource["parameters"]["dataset"]][()]
    frame_bytes = truth[0].nbytes
    for local_files in (True, False):
        for block_bytes in (2 * frame_bytes, 3 * frame_bytes, 64 * 2**20):
            source = TiledFrameSource(run, block_bytes=block_bytes, local_files=local_files)
            pairs = [pair for datum in datums for pair in source.iter_frames("primary", resource, datum)]
            source.close()
            assert [seq_num for seq_num, _ in pairs] == [1, 2, 3, 4, 5]
            np.testing.assert_array_equal(np.stack([frame for _, frame in pairs]).reshape(truth.shape), truth)
    with pytest.raises(ValueError, match="block_bytes"):
        TiledFrameSource(run, block_bytes=0)


def test_session_exposes_every_live_signal_by_analysis_and_name(session):
    signals = session.live_signals
    expected = {f"{a.analysis}_{name}" for a in session.analyses for name in a.signals}
    assert set(signals) == expected
    assert {"xrd_reduction_lattice_change_A", "frame_statistics_total"} <= set(signals)
    assert signals["xrd_reduction_lattice_change_A"] is next(
        a for a in session.analyses if a.analysis == "xrd_reduction").signals["lattice_change_A"]


def test_two_live_analyses_of_one_name_are_refused(tmp_path):
    with pytest.raises(ValueError, match="frame_statistics_total"):
        make_session(data_dir=tmp_path / "d", api_key=API_KEY, persist_metadata=False,
                     analyses=[FrameStatisticsCallback(), FrameStatisticsCallback(background=1.0)])


def test_nanostrain_replay_is_the_function_and_analysis_stays_light():
    code = (
        "import sys, nanostrain.analysis\n"
        "assert 'bluesky' not in sys.modules, 'nanostrain.analysis pulled in bluesky'\n"
        "import nanostrain.replaying\n"
        "from nanostrain import make_session, replay\n"
        "assert replay is nanostrain.replaying.replay and callable(make_session)\n"
        "print('OK')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr


def test_replay_draws_a_progress_bar_over_the_run_frames_when_asked(session, capsys):
    published = replay(session.catalog[session.uid], progress=True)
    bar = capsys.readouterr().err.strip().split("\r")[-1]
    assert bar.startswith("replay: 100%") and "5/5" in bar and "frame/s" in bar
    assert _stats(published) == _stats(replay(session.catalog[session.uid], progress=False))


def test_replay_without_a_terminal_draws_nothing(session, capsys):
    replay(session.catalog[session.uid])  # progress=None: pytest's captured stderr is no terminal
    assert capsys.readouterr().err == ""
