"""Capacity retention end to end on the simulated beamline: the demo's retention step
(`cycle_cell` of every cell, fresh and aged 100 cycles, at 100 mA/g) -> catalog -> live
electrochemistry -> derived runs -> the report's retention from the catalog alone."""

from __future__ import annotations

import pytest

from nanostrain.demo import Heartbeat, Step, retention_step
from nanostrain.report import STUDY_RETENTION_PCT, aged_retention, headlines, read_campaign
from nanostrain.session import make_session

from ..conftest import API_KEY

pytestmark = pytest.mark.slow


def test_each_cells_measured_retention_is_the_simulators_calibrated_one_and_the_report_orders_them(tmp_path):
    session = make_session(data_dir=tmp_path / "data", api_key=API_KEY)
    try:
        lines = retention_step(Step(session, Heartbeat(session.RE), tmp_path / "figures", quick=True))
        campaign = read_campaign(session.connect(), say=lambda _: None)
    finally:
        session.close()

    assert len(lines) == 4 and len(campaign.cycling) == 8
    assert {(run.morphology, run.composition, run.cycles, run.rate_mA_g) for run in campaign.cycling} == {
        (m, c, cycles, 100.0) for m, c in STUDY_RETENTION_PCT for cycles in (0, 100)}
    # the simulator's fade is calibrated to the study's retention within 1 % (tests/sim/test_cathode.py)
    measured = {cell: aged_retention(campaign, *cell) for cell in STUDY_RETENTION_PCT}
    for cell, study in STUDY_RETENTION_PCT.items():
        assert measured[cell] == pytest.approx(study, abs=1.5), cell
    rows = {row.claim: row for row in headlines(campaign)}
    for first, other in ((("SC", "NC91"), ("SC", "NM91")), (("PC", "NM91"), ("PC", "NC91"))):
        claim = f"capacity retention, 100 cycles at 100 mA/g: {'-'.join(first)} > {'-'.join(other)}"
        assert rows[claim].holds is True
        assert rows[claim].measured == (f"{measured[first]:.1f} % vs {measured[other]:.1f} % "
                                        "(Q after 100 cycles / Q fresh, 100 mA/g)")
