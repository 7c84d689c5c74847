"""Plan progress on a terminal: a bar per run (points of ``num_points``, rate, time left)
drawn from the run's documents, bluesky's ProgressBarManager in a session; nothing
drawn, and nothing broken, without a terminal."""

from __future__ import annotations

import io
import re

import pytest
from bluesky.utils import ProgressBarManager

from nanostrain.plans.alignment import alignment_scan
from nanostrain.plans.progress import RunProgress
from nanostrain.session import make_session

from ..conftest import API_KEY


def _final_line(text: str) -> str:
    """The bar as last drawn (tqdm redraws in place with carriage returns)."""
    return re.split(r"[\r\n]+", text.strip())[-1]


def test_a_run_bar_counts_the_points_of_num_points_with_rate_and_time_left(RE, bench):
    out = io.StringIO()
    RE(alignment_scan(bench["cam"], bench["sx"], -1.0, 1.0, 7, exposure_s=0.01), RunProgress(out, enabled=True))

    line = _final_line(out.getvalue())
    assert line.startswith("alignment_scan #")
    assert "100%" in line and "7/7" in line and "point/s" in line


def test_a_run_bar_without_num_points_counts_the_points_of_its_primary_stream():
    out = io.StringIO()
    progress = RunProgress(out, enabled=True)
    progress("start", {"uid": "s", "plan_name": "operando_xrd", "scan_id": 3})
    progress("descriptor", {"uid": "d", "name": "primary"})
    progress("descriptor", {"uid": "e", "name": "echem"})
    for seq_num in (1, 2, 3):
        progress("event", {"descriptor": "d", "seq_num": seq_num})
        progress("event", {"descriptor": "e", "seq_num": seq_num})  # another stream: not counted
    progress("stream_datum", {"descriptor": "d", "seq_nums": {"start": 4, "stop": 9}})  # a fly row
    progress("stop", {"run_start": "s"})

    line = _final_line(out.getvalue())
    assert line.startswith("operando_xrd #3: 8point")


def test_without_a_terminal_nothing_is_drawn(RE, bench):
    out = io.StringIO()  # not a terminal
    RE(alignment_scan(bench["cam"], bench["sx"], -1.0, 1.0, 3, exposure_s=0.01), RunProgress(out))
    assert out.getvalue() == ""


@pytest.mark.slow
def test_a_session_draws_bars_when_asked_and_none_without_a_terminal(tmp_path, capsys):
    quiet = make_session(data_dir=tmp_path / "q", api_key=API_KEY, persist_metadata=False, live_analysis=False)
    try:
        assert quiet.RE.waiting_hook is None
        d = quiet.devices
        quiet.RE(alignment_scan(d["cam"], d["sx"], -0.5, 0.5, 3, exposure_s=0.01))
        assert "alignment_scan #" not in capsys.readouterr().err
    finally:
        quiet.close()

    shown = make_session(data_dir=tmp_path / "s", api_key=API_KEY, persist_metadata=False, live_analysis=False,
                         progress=True)
    try:
        assert isinstance(shown.RE.waiting_hook, ProgressBarManager)
        d = shown.devices
        shown.RE(alignment_scan(d["cam"], d["sx"], -0.5, 0.5, 3, exposure_s=0.01))
        err = capsys.readouterr().err
        assert "alignment_scan #" in err and "3/3" in err
    finally:
        shown.close()
