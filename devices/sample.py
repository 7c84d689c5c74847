"""The ``mounted_sample`` signal every sample-holding device has, real or simulated.

Its value is the JSON of a `nanostrain.schema.sample.SampleRecord` (empty: nothing
recorded yet); it is a configuration signal, so every descriptor of every run says what
was mounted. Writing it (``bps.mv(device.mounted_sample, record.to_json())``, what the
`mount_sample` plan does) records the sample on a real device; a simulated twin passes a
``mount`` callback that also puts the sample in its simulated beam. Nothing here imports
the simulator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from ophyd_async.core import SignalRW, soft_signal_rw

from nanostrain.schema.sample import SampleRecord

__all__ = ["SampleHolder", "mounted_sample_signal", "particle_record"]


@runtime_checkable
class SampleHolder(Protocol):
    """A device a sample is mounted on (cycler, XRD detector, nanoprobe detector, TXM)."""

    mounted_sample: SignalRW[str]


def mounted_sample_signal(
    default: SampleRecord | None = None, mount: Callable[[SampleRecord], Awaitable[None] | None] | None = None
) -> SignalRW[str]:
    """The ``mounted_sample`` signal, initially ``default`` (None: empty). A written value
    must be a `SampleRecord`'s JSON (ValueError otherwise, before ``mount`` is called);
    ``mount(record)`` runs before the write completes (a twin's physics)."""

    async def setter(value: str) -> None:
        record = SampleRecord.from_json(value)
        if mount is not None:
            result = mount(record)
            if result is not None:
                await result

    return soft_signal_rw(str, "" if default is None else default.to_json(), setter=setter)


def particle_record(particle) -> SampleRecord:
    """The record of a fresh cathode particle (a `nanostrain.sim.cathode.CathodeParticle`:
    its material and morphology names), for a twin's default sample."""
    material, morphology = particle.material.name, particle.morphology.name
    return SampleRecord(name=f"{morphology}-{material}", material=material, morphology=morphology)
