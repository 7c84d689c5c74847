"""Argument checks that run before a plan yields its first message.

Every nanostrain plan validates first and moves second: a bad argument raises a
`PlanArgumentError` (a ValueError) naming the argument, the value and what is allowed,
while nothing has moved and nothing has been recorded. The checks here are the only ones
the plans use, so every plan refuses the same things the same way:

* numbers: real (not bool, not a string), finite, inside a stated range (every positive
  quantity has a maximum too, so a huge value is refused like a negative one);
* counts: integers inside a stated range, checked before anything is allocated from them;
* sequences (angles, energies, spans): their length is checked before they are converted;
* devices: the bluesky protocols and children a plan needs of each device argument
  (`DeviceRole`), so a motor given where a detector is needed is refused by name;
* limits the devices hold as state (an axis's soft limits, a cycler channel's current
  limit) are read by plan stubs (`check_axis_limits`) that run first in the plan, before
  any motion and before the run opens.
"""

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bluesky.plan_stubs as bps
import numpy as np
from bluesky.protocols import Locatable, Movable, Preparable, Readable, Triggerable, WritesStreamAssets
from bluesky.utils import MsgGenerator
from numpy.typing import NDArray

from ..analysis.xrd import pyfai_geometry


class PlanArgumentError(ValueError):
    """A plan argument is out of range, ill-typed or inconsistent; raised before anything moves."""


# --------------------------------------------------------------------------------------
# Numbers and counts
# --------------------------------------------------------------------------------------
def require_finite(name: str, value: float) -> float:
    """``value`` as a float if it is a finite real number (bool and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise PlanArgumentError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def require_range(name: str, value: float, low: float, high: float, unit: str = "") -> float:
    """``value`` as a float if it is finite and ``low <= value <= high``."""
    if not low <= require_finite(name, value) <= high:
        raise PlanArgumentError(f"{name} = {value!r} {unit} is outside the allowed range [{low}, {high}] {unit}.")
    return float(value)


def require_positive(name: str, value: float, maximum: float, unit: str = "") -> float:
    """``value`` as a float if it is finite and ``0 < value <= maximum``."""
    if not 0 < require_finite(name, value) <= maximum:
        raise PlanArgumentError(f"{name} must be > 0 and <= {maximum:g} {unit}, got {value!r}.")
    return float(value)


def require_count(name: str, value: int, minimum: int, maximum: int) -> int:
    """``value`` as an int if it is an integer (bool refused) with ``minimum <= value <= maximum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not minimum <= value <= maximum:
        raise PlanArgumentError(f"{name} must be an integer between {minimum} and {maximum}, got {value!r}.")
    return int(value)


def require_bool(name: str, value: bool) -> bool:
    """``value`` if it is a bool (a string such as "no" would be truthy)."""
    if not isinstance(value, bool | np.bool_):
        raise PlanArgumentError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def require_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise PlanArgumentError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return value


# --------------------------------------------------------------------------------------
# Sequences, spans, mappings, paths
# --------------------------------------------------------------------------------------
def require_numbers(name: str, values: Sequence[float], minimum: int, maximum: int, unit: str = "") -> NDArray[np.float64]:
    """``values`` (a sequence or 1D array of finite numbers, ``minimum`` to ``maximum`` of
    them) as a float64 array. The length is checked before anything is converted, so a
    huge or lazy sequence (``range(10**12)``) is refused without allocating it."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence | np.ndarray):
        raise PlanArgumentError(f"{name} must be a sequence of numbers ({unit}), got {values!r}.")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise PlanArgumentError(f"{name} must be one-dimensional, got an array of shape {values.shape}.")
    if not minimum <= len(values) <= maximum:
        raise PlanArgumentError(f"{name} must hold between {minimum} and {maximum} values ({unit}), got {len(values)}.")
    return np.array([require_finite(f"{name}[{index}]", value) for index, value in enumerate(values)], dtype=np.float64)


def require_span(name: str, span: Sequence[float], unit: str = "", what: str = "(start, stop)") -> tuple[float, float]:
    """A (start, stop) pair of finite numbers, in either order."""
    if isinstance(span, Sequence | np.ndarray) and not isinstance(span, str | bytes) and len(span) != 2:
        raise PlanArgumentError(f"{name} must be {what}: two numbers ({unit}), got {span!r}.")
    start, stop = require_numbers(name, span, 2, 2, unit)
    return float(start), float(stop)


def require_limits(name: str, limits: Sequence[float], unit: str = "") -> tuple[float, float]:
    """A (low, high) pair of finite numbers with low < high."""
    low, high = require_span(name, limits, unit, "(low, high)")
    if not low < high:
        raise PlanArgumentError(f"{name} must be (low, high) with low < high ({unit}), got {limits!r}.")
    return low, high


def require_within_limits(name: str, positions: Sequence[float], limits: tuple[float, float], unit: str = "") -> None:
    """All ``positions`` of a motion lie inside the soft ``limits`` (low, high)."""
    low, high = limits
    bad = [p for p in positions if not low <= p <= high]
    if bad:
        raise PlanArgumentError(
            f"{name} would move to {bad[0]!r} {unit}, outside the soft limits [{low}, {high}] {unit}."
        )


def require_mapping(name: str, value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """None, or a dict (a mapping with string keys) as a new dict."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise PlanArgumentError(f"{name} must be a dict with string keys, got {value!r}.")
    return dict(value)


def require_metadata(sample: Mapping[str, Any] | None, md: Mapping[str, Any] | None) -> None:
    """A plan's ``sample`` and ``md`` arguments: each None or a dict with string keys."""
    require_mapping("sample", sample)
    require_mapping("md", md)


def require_pyfai_config(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A pyFAI geometry config (``ai.get_config()``) as a dict, if pyFAI builds a geometry
    from it."""
    config = require_mapping(name, config)
    try:
        pyfai_geometry(config)
    except Exception as error:  # pyFAI raises many kinds of error for a bad config
        raise PlanArgumentError(f"{name} is not a pyFAI geometry config: {error!r}") from None
    return config


def require_path(name: str, value: str | os.PathLike) -> str:
    """A non-empty path (a str or os.PathLike) as a str."""
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise PlanArgumentError(f"{name} must be a path (a str), got {value!r}.")
    return os.fspath(value)


# --------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceRole:
    """What a plan needs of a device argument: every bluesky protocol of ``protocols``,
    at least one of ``any_of`` (if given), and the children or attributes ``children``
    (dotted paths, e.g. ``"stats.total"``). ``description`` is what the error calls it."""

    description: str
    protocols: tuple[type, ...] = ()
    any_of: tuple[type | str, ...] = ()
    children: tuple[str, ...] = ()

    def missing(self, device: Any) -> list[str]:
        """What ``device`` lacks of this role (empty if it fills it)."""
        lacking = [protocol.__name__ for protocol in self.protocols if not isinstance(device, protocol)]
        if self.any_of and not any(_has(device, option) for option in self.any_of):
            lacking.append(" or ".join(_option_name(option) for option in self.any_of))
        return lacking + [child for child in self.children if not _has(device, child)]

    def requiring(self, *children: str) -> "DeviceRole":
        """This role with more required ``children``."""
        return DeviceRole(self.description, self.protocols, self.any_of, self.children + children)


def _has(device: Any, option: type | str) -> bool:
    if isinstance(option, type):
        return isinstance(device, option)
    for part in option.split("."):
        if not hasattr(device, part):
            return False
        device = getattr(device, part)
    return True


def _option_name(option: type | str) -> str:
    return option.__name__ if isinstance(option, type) else option


def require_device(name: str, device: Any, role: DeviceRole) -> Any:
    """``device`` if it fills ``role``; a queue item's name that was not resolved (a str),
    a number or a device of another kind is refused, naming the argument."""
    missing = role.missing(device) if not isinstance(device, str | bytes | numbers.Number) else ["a device"]
    if missing:
        raise PlanArgumentError(
            f"{name} must be {role.description}, got {device!r} (lacks {', '.join(missing)}). A queue item "
            "gives a device by name; the queue server passes the object."
        )
    return device


def require_optional_device(name: str, device: Any, role: DeviceRole) -> Any:
    """None, or a ``device`` filling ``role``."""
    return None if device is None else require_device(name, device, role)


#: Something read into a stream or compared with a threshold: a monitor, a live signal.
READABLE = DeviceRole("a readable device or signal", (Readable,))
#: A detector that writes frames (ophyd-async StandardDetector: prepared, triggered, files).
AREA_DETECTOR = DeviceRole("an area detector", (Readable, Triggerable, Preparable, WritesStreamAssets))
#: A motor or axis: moves to a number and tells where it is (ophyd-async ``locate``, an
#: ophyd positioner's ``position``).
POSITIONER = DeviceRole("a positioner (a motor or axis)", (Readable, Movable), any_of=(Locatable, "position"))
#: An axis with motor-record soft limits (read by `check_axis_limits`).
LIMITED_AXIS = POSITIONER.requiring("low_limit_travel", "high_limit_travel")


# --------------------------------------------------------------------------------------
# Limits the devices hold (plan stubs: they read, nothing moves)
# --------------------------------------------------------------------------------------
def has_soft_limits(axis: Any) -> bool:
    """The axis exposes motor-record soft limits (``low_limit_travel``, ``high_limit_travel``)."""
    return hasattr(axis, "low_limit_travel") and hasattr(axis, "high_limit_travel")


def check_axis_limits(
    moves: Sequence[tuple[Any, float, float]], speeds: Sequence[tuple[Any, float]] = ()
) -> MsgGenerator[None]:
    """Plan stub: read each axis's soft limits (``low_limit_travel``, ``high_limit_travel``;
    both 0 = none, the motor-record convention) and raise `PlanArgumentError` if a move
    (axis, lowest, highest) leaves them or a speed (axis, units/s) exceeds
    ``max_velocity`` (0 = no maximum). Reads only: nothing moves. A plan runs it before
    its first motion and before its run opens."""
    for axis, lowest, highest in moves:
        low = yield from bps.rd(axis.low_limit_travel)
        high = yield from bps.rd(axis.high_limit_travel)
        if (low, high) != (0.0, 0.0) and not (low <= lowest and highest <= high):
            raise PlanArgumentError(
                f"{axis.name} would move over [{lowest}, {highest}], outside its soft limits [{low}, {high}]."
            )
    for axis, speed in speeds:
        maximum = yield from bps.rd(axis.max_velocity)
        if maximum > 0 and speed > maximum:
            raise PlanArgumentError(f"{axis.name} would fly at {speed:g}/s, above its maximum speed {maximum:g}/s.")
