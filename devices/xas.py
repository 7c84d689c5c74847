"""Ex situ XAS in transmission (SCIENCE.md section 5; NSLS-II 7-BM): a DCM energy axis and
three ion chambers.

The beam passes the I0 chamber, the sample, the It chamber, a reference Ni foil and the
Iref chamber, so that every point of a scan measures

    mu_sample(E) = ln(I0 / It),        mu_reference(E) = ln(It / Iref)

(plus constants the normalisation removes), and the reference foil's edge aligns the
energy scale of every scan (`analysis.xas`). Plans see one `IonChambers` protocol:
``i0``, ``it``, ``iref`` (counts of the last count, hinted), ``count_time`` (s,
configuration), ``trigger()`` (count once), ``mounted_sample``. `EpicsIonChambers`
reads them from a counter IOC (the PV table `ION_CHAMBER_PVS`); `SimIonChambers` counts
photons through a simulated absorber at the DCM's true energy. The energy is a
`devices.dcm.DcmEnergy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from bluesky.protocols import Readable, Triggerable
from ophyd_async.core import (
    DEFAULT_TIMEOUT,
    AsyncStatus,
    SignalR,
    SignalRW,
    StandardReadable,
    soft_signal_r_and_setter,
    soft_signal_rw,
)
from ophyd_async.core import StandardReadableFormat as Format
from ophyd_async.epics.core import epics_signal_r, epics_signal_rw

from nanostrain.schema.sample import SampleRecord

from .dcm import DcmEnergy, energy_from_bragg_eV
from .sample import mounted_sample_signal

if TYPE_CHECKING:  # the simulator is imported where a twin is built, never here
    from nanostrain.sim.xas_model import XasSpecimen

__all__ = ["ION_CHAMBER_PVS", "SIM_XAS_SAMPLE", "EpicsIonChambers", "IonChambers", "SimIonChambers"]

#: PV suffixes of the counter IOC (after the device prefix): count time (ao, s), count
#: command (bo, put 1; the put completes when the count is over), and the counts of the
#: three chambers (ai).
ION_CHAMBER_PVS = {"count_time": "CountTime", "count": "Count", "i0": "I0", "it": "It", "iref": "Iref"}

#: The simulated XAS station's default sample: a pristine single-crystal NM91 electrode.
SIM_XAS_SAMPLE = SampleRecord(name="SC-NM91", material="NM91", morphology="SC")


@runtime_checkable
class IonChambers(Readable, Triggerable, Protocol):
    """What an XAS plan needs of the detectors: three chamber signals, a count time."""

    i0: SignalR[float]
    it: SignalR[float]
    iref: SignalR[float]
    count_time: SignalRW[float]
    mounted_sample: SignalRW[str]


class EpicsIonChambers(StandardReadable):
    """I0, It, Iref of a counter IOC (``prefix`` + `ION_CHAMBER_PVS`): trigger() writes the
    count time's worth of counting (put 1 to ``Count``) and waits for the put callback,
    which the IOC completes when the count is over; the counts are then read."""

    def __init__(self, prefix: str, name: str = "") -> None:
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.i0 = epics_signal_r(float, prefix + ION_CHAMBER_PVS["i0"])
            self.it = epics_signal_r(float, prefix + ION_CHAMBER_PVS["it"])
            self.iref = epics_signal_r(float, prefix + ION_CHAMBER_PVS["iref"])
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.count_time = epics_signal_rw(float, prefix + ION_CHAMBER_PVS["count_time"])
            self.mounted_sample = mounted_sample_signal()
        self.count = epics_signal_rw(bool, prefix + ION_CHAMBER_PVS["count"])
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        count_time = await self.count_time.get_value()
        await self.count.set(True, timeout=count_time + DEFAULT_TIMEOUT)


class SimIonChambers(StandardReadable):
    """Simulated twin of `EpicsIonChambers`: at trigger, Poisson counts of ``flux``
    photons/s x ``count_time`` through the sample (`sim.xas_model.XasSpecimen`) and the
    reference foil at the photon energy the DCM passes (its Bragg readback's energy +
    ``dcm_offset_eV``, a miscalibration the reference foil reveals):

        I0 = P(phi t g0),  It = P(phi t g exp(-mu_s(E))),  Iref = P(phi t g exp(-mu_s(E) - mu_ref(E))),

    with chamber efficiencies g0 = 0.1 (I0 absorbs a tenth) and g = 0.5.
    ``mounted_sample`` (a `SampleRecord` JSON) mounts the electrode it names.
    """

    def __init__(
        self,
        dcm: DcmEnergy,
        specimen: XasSpecimen | None = None,
        *,
        flux: float = 1e10,
        count_time: float = 0.1,
        dcm_offset_eV: float = 0.0,
        seed: int | None = 0,
        name: str = "",
    ) -> None:
        from nanostrain.sim.xas_model import electrode_specimen, ni_foil_absorbance

        # the DCM's Bragg readback, read at each count (a callable: the DCM stays a device of its own)
        self._bragg_deg = dcm.bragg.user_readback.get_value
        self.flux, self.dcm_offset_eV = float(flux), float(dcm_offset_eV)
        self.sample_record: SampleRecord | None = None
        if specimen is None:
            self.sample_record, specimen = SIM_XAS_SAMPLE, electrode_specimen(SIM_XAS_SAMPLE)
        self.specimen = specimen
        self._reference: Callable[[float], float] = ni_foil_absorbance
        self._rng = np.random.default_rng(seed)
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.i0, self._set_i0 = soft_signal_r_and_setter(float, 0.0)
            self.it, self._set_it = soft_signal_r_and_setter(float, 0.0)
            self.iref, self._set_iref = soft_signal_r_and_setter(float, 0.0)
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.count_time = soft_signal_rw(float, count_time, units="s")
            self.mounted_sample = mounted_sample_signal(self._mount, lambda: self.sample_record)
        super().__init__(name=name)

    def _mount(self, record: SampleRecord) -> None:
        if record.is_calibrant:
            raise ValueError(f"{self.name}: the XAS station takes a cathode electrode, not {record.name}")
        from nanostrain.sim.xas_model import electrode_specimen

        self.specimen, self.sample_record = electrode_specimen(record), record

    def photon_energy_eV(self, bragg_deg: float) -> float:
        """The energy the DCM passes at ``bragg_deg`` (its scale + the true offset), eV."""
        return energy_from_bragg_eV(bragg_deg) + self.dcm_offset_eV

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        bragg = await self._bragg_deg()
        count_time = await self.count_time.get_value()
        energy = self.photon_energy_eV(bragg)
        mu_sample = float(self.specimen.absorbance(np.array([energy]))[0])
        photons = self.flux * count_time
        transmitted = 0.5 * photons * math.exp(-mu_sample)
        self._set_i0(float(self._rng.poisson(0.1 * photons)))
        self._set_it(float(self._rng.poisson(transmitted)))
        self._set_iref(float(self._rng.poisson(transmitted * math.exp(-self._reference(energy)))))
