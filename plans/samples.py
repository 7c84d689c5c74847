"""Mount a sample: one plan for every instrument, real or simulated.

The sample is JSON (a dict, or a calibrant's name), in the schema of
`nanostrain.schema.sample` (material, morphology, state: charge_V, current_mA_g, cycles;
or "CeO2"). The plan writes the checked record to the device's ``mounted_sample``
signal: a real device records it (every later descriptor carries it); a simulated twin
also puts that particle, cell or calibrant in its beam. The plan cannot tell which.
"""

from typing import Any

import bluesky.plan_stubs as bps
from bluesky.protocols import Stageable
from bluesky.utils import MsgGenerator

from ..devices.sample import SampleHolder
from ..schema.sample import SampleRecord, sample_record
from .validation import DeviceRole, PlanArgumentError, require_device

#: A device that holds a sample: a `devices.sample.SampleHolder` (``mounted_sample`` signal).
SAMPLE_HOLDER = DeviceRole("a sample holder (a device with a mounted_sample signal)", (Stageable, SampleHolder))


def validate_mount_sample(sample: dict[str, Any] | str, **state: Any) -> SampleRecord:
    """The record `mount_sample` would write; PlanArgumentError if ``sample`` (with
    ``state`` overriding its ``state``) is not a valid sample."""
    try:
        return sample_record(sample, **state)
    except ValueError as error:
        raise PlanArgumentError(f"mount_sample: {error}") from error


def mount_sample(device: Stageable, sample: dict[str, Any] | str, **state: Any) -> MsgGenerator[SampleRecord]:
    """Mount ``sample`` on ``device`` (a cycler channel, an XRD or nanoprobe detector, the
    TXM): e.g. ``mount_sample(cycler, {"material": "NM91", "morphology": "SC"})``, or
    ``mount_sample(xrd, "CeO2")``, or ``mount_sample(txm, {"material": "NM91"},
    charge_V=4.3, cycles=100)`` (``state`` keys: charge_V in V vs Li/Li+, current_mA_g in
    mA/g, cycles). Checks the sample before anything moves (PlanArgumentError); returns
    the mounted `SampleRecord`. Opens no run: the runs that follow record the sample in
    their descriptors' configuration. ``device`` is typed with a bluesky protocol that
    every sample holder satisfies (so queue servers resolve its name to a device); that it
    holds a `SampleHolder` ``mounted_sample`` signal is checked here."""
    require_device("device", device, SAMPLE_HOLDER)
    record = validate_mount_sample(sample, **state)
    yield from bps.mv(device.mounted_sample, record.to_json())
    return record
