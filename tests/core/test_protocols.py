"""Cycling protocols: builders and the checks that run before anything moves."""

from __future__ import annotations

import pytest

from nanostrain.plans.protocols import ProtocolStep, formation_and_cycling, galvanostatic, gitt, rate_test
from nanostrain.plans.validation import PlanArgumentError


def test_galvanostatic_alternates_charge_and_discharge():
    steps = galvanostatic(100, cycles=2)
    assert [s.mode for s in steps] == ["CC_CHARGE", "CC_DISCHARGE"] * 2
    assert all(s.rate_mA_g == 100 and (s.v_min, s.v_max) == (2.7, 4.5) for s in steps)


def test_formation_runs_first_at_its_own_rate():
    steps = formation_and_cycling(formation_rate_mA_g=20, formation_cycles=3, rate_mA_g=100, cycles=2)
    assert [s.rate_mA_g for s in steps] == [20] * 6 + [100] * 4
    assert steps[0].label.startswith("formation") and steps[-1].label.startswith("cycling")


def test_gitt_defaults_follow_the_reference_protocol():
    steps = gitt(max_titrations=3)
    assert [(s.mode, s.duration_s) for s in steps[:2]] == [("CC_CHARGE", 1200.0), ("REST", 8400.0)]
    assert (steps[0].v_min, steps[0].v_max, steps[0].rate_mA_g) == (2.8, 4.5, 20.0)
    assert len(steps) == 6


def test_rate_test_visits_each_rate():
    assert [s.rate_mA_g for s in rate_test((20, 200))] == [20, 20, 200, 200]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "CC_CHARGE", "rate_mA_g": 100, "v_min": 4.5, "v_max": 2.7}, "must be below"),
        ({"mode": "CC_CHARGE", "rate_mA_g": 100, "v_max": 5.5}, "v_max = 5.5"),
        ({"mode": "CC_CHARGE", "rate_mA_g": -20}, "rate_mA_g"),
        ({"mode": "CC_CHARGE", "rate_mA_g": 5000}, "rate_mA_g"),
        ({"mode": "REST", "rate_mA_g": 0}, "duration_s of a REST step"),
        ({"mode": "CV", "rate_mA_g": 10}, "mode must be"),
    ],
)
def test_bad_steps_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(PlanArgumentError, match=message):
        ProtocolStep(**kwargs)


def test_the_plans_accept_exactly_what_the_cycler_accepts():
    from nanostrain.plans.cycling import cycler_step
    from nanostrain.schema.cycler import MAX_RATE_MA_G, VOLTAGE_WINDOW_V, CyclerMode
    from nanostrain.sim.cathode import CathodeParticle
    from nanostrain.sim.cycler_engine import ACTIVE_MASS_G, CyclerEngine

    low, high = VOLTAGE_WINDOW_V
    edge = ProtocolStep("CC_CHARGE", MAX_RATE_MA_G, low, high)  # every limit at its edge
    engine = CyclerEngine(CathodeParticle("NC91", "PC"), ACTIVE_MASS_G)

    engine.start(cycler_step(edge, ACTIVE_MASS_G))  # the channel refuses nothing the plan accepts

    assert engine.state == "RUNNING"
    assert {"CC_CHARGE", "CC_DISCHARGE", "REST"} <= set(CyclerMode.__members__)
    for beyond in ({"rate_mA_g": MAX_RATE_MA_G * 1.001}, {"v_min": low - 0.01}, {"v_max": high + 0.01}):
        with pytest.raises(PlanArgumentError):
            ProtocolStep(**{"mode": "CC_CHARGE", "rate_mA_g": 100.0, **beyond})
