"""What a plan records about its own call: ``plan_args``, the way bluesky's built-in plans do.

bluesky's `bluesky.plans.scan` and friends record ``plan_name`` and ``plan_args`` (the
arguments, devices by their ``repr``) in the start document; nanostrain's plans do the
same through `plan_args`, so a run says how it was called, whether from Python or from a
queue item.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


def recorded_value(value: Any) -> Any:
    """``value`` as the start document can hold it: numbers, strings, booleans and None as
    they are; numpy scalars and arrays as Python numbers and lists; sequences and mappings
    item by item; dataclass records (`ProtocolStep`, `SxdmGeometry`) as dicts of their
    fields; anything else (a device, a signal) by its ``repr``, as bluesky records devices."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: recorded_value(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): recorded_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [recorded_value(item) for item in value]
    return repr(value)


def plan_args(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The ``plan_args`` record of a call: every argument but ``md`` (merged into the
    start document itself), each as `recorded_value`."""
    return {name: recorded_value(value) for name, value in arguments.items() if name != "md"}
