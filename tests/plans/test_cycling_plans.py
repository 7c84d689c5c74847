"""The cycling plans refuse bad arguments before they yield anything."""

from __future__ import annotations

import pytest

from nanostrain.schema.cycler import CyclerStep
from nanostrain.plans.cycling import cycler_step, gitt, operando_xrd
from nanostrain.plans.protocols import ProtocolStep, galvanostatic
from nanostrain.plans.validation import PlanArgumentError


class Named:
    def __init__(self, name):
        self.name = name


class FakeCycler:
    """Only names: a plan that validates first never touches the device."""

    def __init__(self):
        for attr in ("potential", "current", "step_time", "total_charge", "step_index", "cycle_index", "state", "step_capacity"):
            setattr(self, attr, Named(f"cycler-{attr}"))


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
        ({"active_mass_g": 6e-3, "cadence_s": 60}, "No detector geometry"),
    ],
)
def test_operando_xrd_validates_before_moving(kwargs, message):
    plan = operando_xrd(FakeCycler(), Named("xrd"), galvanostatic(100), **kwargs)
    with pytest.raises(PlanArgumentError, match=message):
        next(plan)


def test_empty_protocol_is_refused():
    with pytest.raises(PlanArgumentError, match="non-empty sequence of steps"):
        next(gitt(FakeCycler(), active_mass_g=6e-3, protocol=()))


def test_specific_current_becomes_the_cycler_current():
    step = cycler_step(ProtocolStep("CC_CHARGE", 200.0, 2.7, 4.5), active_mass_g=6.16e-3)
    assert isinstance(step, CyclerStep)
    assert step.current_mA == pytest.approx(1.232)
    assert (step.v_min, step.v_max) == (2.7, 4.5)
