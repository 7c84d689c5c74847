"""The cycling plans refuse bad arguments before they yield anything."""

from __future__ import annotations

import pytest

from nanostrain.schema.cycler import CyclerStep
from nanostrain.plans.cycling import cycle_cell, cycler_step, gitt, operando_xrd
from nanostrain.plans.protocols import ProtocolStep, galvanostatic
from nanostrain.plans.validation import PlanArgumentError


class Named:
    def __init__(self, name):
        self.name = name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"active_mass_g": 0.0, "cadence_s": 60}, "active_mass_g"),
        ({"active_mass_g": 5.0, "cadence_s": 60}, "active_mass_g"),
        ({"active_mass_g": 6e-3}, "exactly one of cadence_s"),
        ({"active_mass_g": 6e-3, "cadence_s": 60, "cadence_mAh_g": 5}, "exactly one of cadence_s"),
        ({"active_mass_g": 6e-3, "cadence_s": -1}, "cadence_s must be > 0"),
        ({"active_mass_g": 6e-3, "cadence_s": 60, "feedback": Named("x")}, "feedback and feedback_threshold"),
        ({"active_mass_g": 6e-3, "cadence_s": 60, "exposure_s": 0}, "exposure_s"),
        ({"active_mass_g": 6e-3, "cadence_s": 60, "dense_factor": 0.5}, "dense_factor"),
    ],
)
def test_operando_xrd_validates_before_moving(sim_devices, kwargs, message):
    plan = operando_xrd(sim_devices["cycler"], sim_devices["xrd"], galvanostatic(100), **kwargs)
    with pytest.raises(PlanArgumentError, match=message):
        next(plan)


def test_a_detector_without_geometry_needs_one(sim_devices):
    plan = operando_xrd(sim_devices["cycler"], sim_devices["cam"], galvanostatic(100), active_mass_g=6e-3, cadence_s=60)
    with pytest.raises(PlanArgumentError, match="detector 'cam' has no geometry_config"):
        next(plan)


@pytest.mark.parametrize("plan_name", ["operando_xrd", "gitt", "cycle_cell"])
def test_a_current_above_the_channel_limit_is_refused_before_the_run_opens(sim_devices, plan_name):
    from bluesky import RunEngine
    from bluesky.run_engine import call_in_bluesky_event_loop

    cycler = sim_devices["cycler"]
    limit_mA = call_in_bluesky_event_loop(cycler.current_limit.get_value())
    active_mass_g = 0.1  # the largest accepted: 1400 mA/g is then 140 mA
    protocol = [{"mode": "REST", "duration_s": 10.0}, {"mode": "CC_CHARGE", "rate_mA_g": 1400.0}]
    assert 1400.0 * active_mass_g > limit_mA
    kwargs = {"active_mass_g": active_mass_g, "protocol": protocol}
    plan = {"operando_xrd": lambda: operando_xrd(cycler, sim_devices["xrd"], protocol, active_mass_g=active_mass_g,
                                                 cadence_s=60.0),
            "gitt": lambda: gitt(cycler, **kwargs),
            "cycle_cell": lambda: cycle_cell(cycler, **kwargs)}[plan_name]()
    documents, messages = [], []
    RE = RunEngine({})
    RE.msg_hook = messages.append
    with pytest.raises(PlanArgumentError, match=r"protocol step 1 .* exceeds cycler's current limit"):
        RE(plan, lambda name, doc: documents.append(name))
    assert documents == []
    assert [message.command for message in messages] == ["read"]  # the limit, nothing else
    assert call_in_bluesky_event_loop(cycler.step_index.get_value()) == 0


def test_empty_protocol_is_refused(sim_devices):
    with pytest.raises(PlanArgumentError, match="non-empty sequence of steps"):
        next(gitt(sim_devices["cycler"], active_mass_g=6e-3, protocol=()))


def test_specific_current_becomes_the_cycler_current():
    step = cycler_step(ProtocolStep("CC_CHARGE", 200.0, 2.7, 4.5), active_mass_g=6.16e-3)
    assert isinstance(step, CyclerStep)
    assert step.current_mA == pytest.approx(1.232)
    assert (step.v_min, step.v_max) == (2.7, 4.5)
