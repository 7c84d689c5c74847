"""Electrochemical cycling protocols, as data: what the cycler should do, step by step.

A protocol is a tuple of `ProtocolStep` in *specific* units (mA/g, V vs Li/Li+, s); the
plans turn each into the cycler's absolute current with the electrode's active mass.
Builders cover the usual experiments: galvanostatic cycling, formation then long
cycling, rate tests, GITT. A queue item gives a protocol as JSON (`ProtocolSpec`): a list
of steps as dicts with `ProtocolStep`'s field names, or a builder by name with its
arguments, ``{"name": "galvanostatic", "args": {"rate_mA_g": 100, "cycles": 2}}``;
`resolve_protocol` turns either (or ProtocolStep objects) into a `Protocol`.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from ..schema.cycler import MAX_RATE_MA_G, VOLTAGE_WINDOW_V
from .validation import PlanArgumentError, require_bool, require_count, require_finite, require_numbers, require_positive, require_range

#: Longest step, s (30 days).
MAX_STEP_S = 30 * 24 * 3600.0
#: Most cycles one builder makes (`galvanostatic`, each part of `formation_and_cycling`).
MAX_CYCLES = 10_000
#: Most steps in one protocol (formation and cycling of MAX_CYCLES each, charge and discharge).
MAX_STEPS = 4 * MAX_CYCLES

Mode = Literal["CC_CHARGE", "CC_DISCHARGE", "REST"]


@dataclass(frozen=True)
class ProtocolStep:
    """One cycler step: ``mode``, specific current ``rate_mA_g`` (>= 0; 0 for REST; at most
    the cell's safety maximum `MAX_RATE_MA_G`), voltage window ``v_min``..``v_max`` (V,
    inside the cell's safe `VOLTAGE_WINDOW_V`) that ends a CC step, ``duration_s`` (0 = until
    the voltage limit; required for REST; at most `MAX_STEP_S`), ``label`` for the record
    (e.g. "formation 1"). Every number finite; PlanArgumentError naming the field."""

    mode: Mode
    rate_mA_g: float = 0.0
    v_min: float = 2.7
    v_max: float = 4.5
    duration_s: float = 0.0
    label: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ("CC_CHARGE", "CC_DISCHARGE", "REST"):
            raise PlanArgumentError(f"mode must be CC_CHARGE, CC_DISCHARGE or REST, got {self.mode!r}.")
        require_range("v_min", self.v_min, *VOLTAGE_WINDOW_V, unit="V")
        require_range("v_max", self.v_max, *VOLTAGE_WINDOW_V, unit="V")
        if self.v_min >= self.v_max:
            raise PlanArgumentError(f"v_min ({self.v_min} V) must be below v_max ({self.v_max} V).")
        if not isinstance(self.label, str):
            raise PlanArgumentError(f"label must be a string, got {self.label!r}.")
        if self.mode == "REST":
            if require_finite("rate_mA_g", self.rate_mA_g) != 0:
                raise PlanArgumentError("A REST step carries no current (rate_mA_g = 0).")
            require_positive("duration_s of a REST step", self.duration_s, MAX_STEP_S, "s")
        else:
            require_range("rate_mA_g", self.rate_mA_g, 1e-3, MAX_RATE_MA_G, unit="mA/g")
            require_range("duration_s", self.duration_s, 0.0, MAX_STEP_S, unit="s")


Protocol = tuple[ProtocolStep, ...]


def galvanostatic(rate_mA_g: float, cycles: int = 1, v_min: float = 2.7, v_max: float = 4.5, label: str = "") -> Protocol:
    """``cycles`` x (constant-current charge to ``v_max``, discharge to ``v_min``)."""
    rate_mA_g = require_range("rate_mA_g", rate_mA_g, 1e-3, MAX_RATE_MA_G, unit="mA/g")
    require_count("cycles", cycles, 1, MAX_CYCLES)
    steps = []
    for n in range(1, cycles + 1):
        tag = f"{label or f'{rate_mA_g:g} mA/g'} cycle {n}"
        steps.append(ProtocolStep("CC_CHARGE", rate_mA_g, v_min, v_max, label=f"{tag} charge"))
        steps.append(ProtocolStep("CC_DISCHARGE", rate_mA_g, v_min, v_max, label=f"{tag} discharge"))
    return tuple(steps)


def formation_and_cycling(
    formation_rate_mA_g: float = 20.0,
    formation_cycles: int = 3,
    rate_mA_g: float = 100.0,
    cycles: int = 100,
    v_min: float = 2.7,
    v_max: float = 4.5,
) -> Protocol:
    """Formation cycles at a low rate (SCIENCE.md: 3 at 20 mA/g), then long cycling."""
    return galvanostatic(formation_rate_mA_g, formation_cycles, v_min, v_max, "formation") + galvanostatic(
        rate_mA_g, cycles, v_min, v_max, "cycling"
    )


def rate_test(rates_mA_g: tuple[float, ...] = (20, 50, 100, 200, 20), cycles_per_rate: int = 1, v_min: float = 2.7, v_max: float = 4.5) -> Protocol:
    """Galvanostatic cycles at each rate in turn (the last back at a low rate: recovery)."""
    rates = require_numbers("rates_mA_g", rates_mA_g, 1, MAX_STEPS // 2, "mA/g")
    require_count("cycles_per_rate", cycles_per_rate, 1, MAX_CYCLES)
    if rates.size * cycles_per_rate > MAX_CYCLES:
        raise PlanArgumentError(f"a rate test of {rates.size} rates x {cycles_per_rate} cycles exceeds {MAX_CYCLES} cycles.")
    return tuple(step for rate in rates for step in galvanostatic(float(rate), cycles_per_rate, v_min, v_max))


def gitt(
    pulse_rate_mA_g: float = 20.0,
    pulse_s: float = 1200.0,
    rest_s: float = 8400.0,
    v_min: float = 2.8,
    v_max: float = 4.5,
    max_titrations: int = 200,
    charge: bool = True,
) -> Protocol:
    """GITT (SCIENCE.md eq. 2): pulses of ``pulse_s`` at ``pulse_rate_mA_g`` each followed
    by ``rest_s`` of open circuit (defaults 20 min / 140 min at 20 mA/g, 2.8-4.5 V).

    The cycler ends a pulse early at the voltage limit; the plan stops titrating then,
    so ``max_titrations`` is only an upper bound.
    """
    require_positive("pulse_s", pulse_s, MAX_STEP_S, "s")
    require_positive("rest_s", rest_s, MAX_STEP_S, "s")
    require_count("max_titrations", max_titrations, 1, MAX_STEPS // 2)
    mode: Mode = "CC_CHARGE" if require_bool("charge", charge) else "CC_DISCHARGE"
    steps = []
    for n in range(1, max_titrations + 1):
        steps.append(ProtocolStep(mode, pulse_rate_mA_g, v_min, v_max, pulse_s, label=f"GITT pulse {n}"))
        steps.append(ProtocolStep("REST", 0.0, v_min, v_max, rest_s, label=f"GITT rest {n}"))
    return tuple(steps)


#: The protocol builders a queue item may name (``{"name": ..., "args": {...}}``).
NAMED_PROTOCOLS: Mapping[str, Callable[..., Protocol]] = {
    "galvanostatic": galvanostatic,
    "formation_and_cycling": formation_and_cycling,
    "rate_test": rate_test,
    "gitt": gitt,
}

#: A protocol as a plan accepts it: a sequence of steps (`ProtocolStep` objects or dicts of
#: its fields), or a named builder with its arguments (a dict). The steps are typed ``Any``
#: so that a queue server can rebuild the annotation from its text (it cannot import
#: `ProtocolStep`) and, seeing it typed, leaves the strings inside (``"CC_CHARGE"``,
#: ``"gitt"``) alone instead of reading them as device or plan names;
#: `resolve_protocol` checks every step.
ProtocolSpec = Sequence[Any] | dict[str, Any]

STEP_FIELDS = tuple(field.name for field in fields(ProtocolStep))


def _step(index: int, step: ProtocolStep | Mapping[str, Any]) -> ProtocolStep:
    if isinstance(step, ProtocolStep):
        return step
    if not isinstance(step, Mapping):
        raise PlanArgumentError(f"protocol step {index} must be a ProtocolStep or a dict of {STEP_FIELDS}, got {step!r}.")
    unknown = sorted(set(step) - set(STEP_FIELDS))
    if unknown or "mode" not in step:
        raise PlanArgumentError(
            f"protocol step {index} = {dict(step)!r}: keys must be among {STEP_FIELDS} and include 'mode'"
            + (f" (unknown: {unknown})." if unknown else ".")
        )
    return ProtocolStep(**step)


def resolve_protocol(spec: ProtocolSpec) -> Protocol:
    """The `Protocol` a plan runs for ``spec``: a non-empty sequence of `ProtocolStep` or
    dicts of its fields (``{"mode": "CC_CHARGE", "rate_mA_g": 100, ...}``), or a named
    builder of `NAMED_PROTOCOLS` with its keyword arguments (``{"name": "gitt", "args":
    {"pulse_s": 600}}``). Raises `PlanArgumentError` naming what is wrong."""
    if isinstance(spec, Mapping):
        if set(spec) - {"name", "args"} or "name" not in spec:
            raise PlanArgumentError(f"a named protocol is {{'name': ..., 'args': {{...}}}}, got {dict(spec)!r}.")
        builder = NAMED_PROTOCOLS.get(spec["name"]) if isinstance(spec["name"], str) else None
        if builder is None:
            raise PlanArgumentError(f"unknown protocol {spec['name']!r}; known: {sorted(NAMED_PROTOCOLS)}.")
        args = spec.get("args") or {}
        if not isinstance(args, Mapping):
            raise PlanArgumentError(f"the args of protocol {spec['name']!r} must be a dict, got {args!r}.")
        try:
            return builder(**args)
        except TypeError as error:
            raise PlanArgumentError(f"protocol {spec['name']!r}: {error}") from None
    if isinstance(spec, str | bytes) or not isinstance(spec, Sequence) or not spec:
        raise PlanArgumentError(
            "protocol must be a non-empty sequence of steps (ProtocolStep or dicts of its fields) or a named "
            f"protocol {{'name': ..., 'args': {{...}}}}, got {spec!r}."
        )
    if len(spec) > MAX_STEPS:
        raise PlanArgumentError(f"protocol must hold at most {MAX_STEPS} steps, got {len(spec)}.")
    try:
        return tuple(_step(index, step) for index, step in enumerate(spec))
    except TypeError as error:
        raise PlanArgumentError(f"protocol step: {error}") from None
