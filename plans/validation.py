"""Argument checks that run before a plan yields its first message.

Every nanostrain plan validates first and moves second: a bad argument raises a
`PlanArgumentError` (a ValueError) naming the argument, the value and what is allowed,
while nothing has moved and nothing has been recorded.
"""

import math
from collections.abc import Sequence


class PlanArgumentError(ValueError):
    """A plan argument is out of range or inconsistent; raised before anything moves."""


def require_finite(name: str, value: float) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise PlanArgumentError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def require_positive(name: str, value: float) -> float:
    if require_finite(name, value) <= 0:
        raise PlanArgumentError(f"{name} must be > 0, got {value!r}.")
    return float(value)


def require_range(name: str, value: float, low: float, high: float, unit: str = "") -> float:
    if not low <= require_finite(name, value) <= high:
        raise PlanArgumentError(f"{name} = {value!r} {unit} is outside the allowed range [{low}, {high}] {unit}.")
    return float(value)


def require_count(name: str, value: int, minimum: int = 1, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or (maximum is not None and value > maximum):
        limit = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise PlanArgumentError(f"{name} must be an integer {limit}, got {value!r}.")
    return value


def require_within_limits(name: str, positions: Sequence[float], limits: tuple[float, float], unit: str = "") -> None:
    """All ``positions`` of a motion lie inside the soft ``limits`` (low, high)."""
    low, high = limits
    bad = [p for p in positions if not low <= p <= high]
    if bad:
        raise PlanArgumentError(
            f"{name} would move to {bad[0]!r} {unit}, outside the soft limits [{low}, {high}] {unit}."
        )
