"""What is mounted on an instrument: the sample record that plans, devices and twins agree on.

A sample is given as JSON (what a queue or a REST call can send):

* a cathode: ``{"material": "NM91", "morphology": "SC", "state": {"charge_V": 4.3,
  "current_mA_g": 200, "cycles": 100}, "name": "SC-NM91 aged"}``. ``material`` is
  required; ``morphology`` is "SC" (single crystal, default) or "PC" (polycrystal);
  ``state`` (optional, every key optional) is its history: ``cycles`` (int, 0-10000, aged
  that many cycles), then ``charge_V`` (V vs Li/Li+, charged galvanostatically until
  that potential; absent = not charged) at ``current_mA_g`` (mA/g, > 0, default 200);
  ``name`` defaults to "<morphology>-<material>".
* a calibrant: the string ``"CeO2"`` (NIST SRM 674b), or ``{"calibrant": "CeO2"}``.

`sample_record` checks it and returns a `SampleRecord`; ``record.to_json()`` is the value
of a device's ``mounted_sample`` signal (a configuration signal, so every descriptor
records what was mounted). On a real device that is all that happens; a simulated twin
also mounts the particle, cell or calibrant it describes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .cycler import MAX_RATE_MA_G

__all__ = ["CALIBRANTS", "MORPHOLOGIES", "SampleRecord", "sample_record"]

#: Calibrants a sample may name (the XRD geometry calibrant, NIST SRM 674b).
CALIBRANTS = ("CeO2",)
#: Cathode morphologies: single crystal, polycrystal.
MORPHOLOGIES = ("SC", "PC")
#: Charge potentials a sample's state may name, V vs Li/Li+.
CHARGE_WINDOW_V = (2.5, 4.8)
#: Most cycles a sample's state may name.
MAX_CYCLES = 10_000
_STATE_KEYS = ("charge_V", "current_mA_g", "cycles")
_CATHODE_KEYS = ("material", "morphology", "state", "name")


@dataclass(frozen=True)
class SampleRecord:
    """A checked sample (module docstring). Exactly one of ``material`` / ``calibrant``."""

    name: str
    material: str | None = None
    morphology: str | None = None
    calibrant: str | None = None
    charge_V: float | None = None
    current_mA_g: float | None = None
    cycles: int = 0

    @property
    def is_calibrant(self) -> bool:
        return self.calibrant is not None

    def to_json(self) -> str:
        """The record as JSON (sorted keys; the ``mounted_sample`` signal's value)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SampleRecord:
        """The inverse of `to_json`; raises ValueError on anything else."""
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a sample record (JSON): {text!r}") from error
        if not isinstance(fields, dict) or set(fields) != set(cls.__dataclass_fields__):
            raise ValueError(f"not a sample record: {text!r}")
        return cls(**fields)


def _number(name: str, value: Any, low: float, high: float, unit: str) -> float:
    """``value`` as a float if it is a real number (not bool) within [low, high] ``unit``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name} must be a number within {low}-{high} {unit}, got {value!r}")
    return float(value)


def sample_record(sample: Mapping[str, Any] | str, **state: Any) -> SampleRecord:
    """Check ``sample`` (module docstring), with ``state`` keys overriding its ``state``,
    and return its `SampleRecord`; raise ValueError naming what is wrong."""
    if isinstance(sample, str):
        sample = {"calibrant": sample}
    if not isinstance(sample, Mapping):
        raise ValueError(f"sample must be a dict or a calibrant name, got {type(sample).__name__}")
    if "calibrant" in sample:
        if set(sample) != {"calibrant"} or state:
            raise ValueError(f"a calibrant sample takes only 'calibrant', got {sorted(sample)} and state {state}")
        if sample["calibrant"] not in CALIBRANTS:
            raise ValueError(f"unknown calibrant {sample['calibrant']!r}; known: {', '.join(CALIBRANTS)}")
        return SampleRecord(name=f"{sample['calibrant']} (NIST SRM 674b)", calibrant=sample["calibrant"])
    unknown = set(sample) - set(_CATHODE_KEYS)
    if unknown:
        raise ValueError(f"unknown sample keys {sorted(unknown)}; a cathode takes {', '.join(_CATHODE_KEYS)}")
    material = sample.get("material")
    if not isinstance(material, str) or not material:
        raise ValueError(f"a cathode sample needs 'material' (e.g. 'NM91'), got {material!r}")
    morphology = sample.get("morphology", "SC")
    if morphology not in MORPHOLOGIES:
        raise ValueError(f"morphology must be one of {MORPHOLOGIES}, got {morphology!r}")
    if not isinstance(sample.get("state") or {}, Mapping):
        raise ValueError(f"state must be a dict of {', '.join(_STATE_KEYS)}, got {sample['state']!r}")
    history = {**(sample.get("state") or {}), **state}
    unknown = set(history) - set(_STATE_KEYS)
    if unknown:
        raise ValueError(f"unknown state keys {sorted(unknown)}; a state takes {', '.join(_STATE_KEYS)}")
    cycles = history.get("cycles", 0)
    if isinstance(cycles, bool) or not isinstance(cycles, int) or not 0 <= cycles <= MAX_CYCLES:
        raise ValueError(f"cycles must be an integer from 0 to {MAX_CYCLES}, got {cycles!r}")
    charge_V = history.get("charge_V")
    current = history.get("current_mA_g")
    if charge_V is None:
        if current is not None:
            raise ValueError("current_mA_g is the rate of a charge: give charge_V too")
    else:
        charge_V = _number("charge_V", charge_V, *CHARGE_WINDOW_V, "V vs Li/Li+")
        current = 200.0 if current is None else _number("current_mA_g", current, 0.0, MAX_RATE_MA_G, "mA/g")
        if current <= 0.0:
            raise ValueError(f"current_mA_g must be > 0, got {current}")
    name = sample.get("name", f"{morphology}-{material}")
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}")
    return SampleRecord(name=name, material=material, morphology=morphology, charge_V=charge_V,
                        current_mA_g=current, cycles=cycles)
