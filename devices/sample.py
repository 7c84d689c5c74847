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
    mount: Callable[[SampleRecord], Awaitable[None] | None] | None = None,
    mounted: Callable[[], SampleRecord | None] | None = None,
) -> SignalRW[str]:
    """The ``mounted_sample`` signal. A written value must be a `SampleRecord`'s JSON
    (ValueError otherwise, before anything is mounted).

    Real devices pass nothing: the signal holds what was written (initially empty). A
    twin passes ``mount(record)``, its physics, run before the write completes, and
    ``mounted()``, what it has mounted now (None: nothing), which is what the signal reads.
    """

    async def setter(value: str) -> None:
        record = SampleRecord.from_json(value)
        if mount is not None:
            result = mount(record)
            if result is not None:
                await result

    if mounted is None:
        return soft_signal_rw(str, "", setter=setter)

    def getter() -> str:
        record = mounted()
        return "" if record is None else record.to_json()

    return soft_signal_rw(str, getter(), setter=setter, getter=getter)


def particle_record(particle) -> SampleRecord:
    """The record of a fresh cathode particle (a `nanostrain.sim.cathode.CathodeParticle`:
    its material and morphology names), for a twin's default sample."""
    material, morphology = particle.material.name, particle.morphology.name
    return SampleRecord(name=f"{morphology}-{material}", material=material, morphology=morphology)
