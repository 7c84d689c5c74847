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

Continuous-energy (fly) XAS: the DCM sweeps the energy at a set speed
(`DcmEnergy.prepare`/``kickoff``) while `XasFlySampler` counts the chambers back to back,
one count of ``count_time`` per sample; each count integrates the photons over the
energies swept during it, and the sample's energy is the mean of the DCM energy at the
count's start and end (both recorded, ``energy_start``/``energy_end``): the readback read
around the count, or the energies the chambers latched at their gate if they report them.
The sweep blurs mu(E) over velocity x count_time: physics the twin keeps.
"""

from __future__ import annotations

import asyncio
import math
import time
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

__all__ = ["ION_CHAMBER_PVS", "SIM_XAS_SAMPLE", "EpicsIonChambers", "IonChambers", "SimIonChambers",
           "XasFlySampler"]

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
    reference foil at the photon energies the DCM passes during the count (its Bragg
    readback's energy + ``dcm_offset_eV``, a miscalibration the reference foil reveals):

        I0 = P(phi t g0),  It = P(phi t g <exp(-mu_s(E))>),  Iref = P(phi t g <exp(-mu_s(E) - mu_ref(E))>),

    with chamber efficiencies g0 = 0.1 (I0 absorbs a tenth) and g = 0.5, and <.> the mean
    over the energies swept during the count (E_a at its start to E_b at its end, at
    constant speed: `SWEEP_NODES` Gauss-Legendre nodes; one energy at rest). A count
    lasts ``count_time`` of wall time while the Bragg motor moves (a fly scan) or always
    with ``realtime``; otherwise it is instant. Its gate is ``count_time`` long, as a
    preset-time scaler's: a late wake-up of the event loop delays the next count, it
    does not widen this one.
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
        realtime: bool = False,
        name: str = "",
    ) -> None:
        from nanostrain.sim.xas_model import electrode_specimen, ni_foil_absorbance

        # the DCM's Bragg readback and setpoint, read at each count (callables: the DCM
        # stays a device of its own)
        self._bragg_deg = dcm.bragg.user_readback.get_value
        self._bragg_target_deg = dcm.bragg.user_setpoint.get_value
        self._dcm_offset_eV = dcm.offset_eV.get_value
        self._gate_eV: tuple[float, float] | None = None
        self.flux, self.dcm_offset_eV, self.realtime = float(flux), float(dcm_offset_eV), bool(realtime)
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

    def transmissions(self, start_eV: float, end_eV: float) -> tuple[float, float]:
        """(<exp(-mu_s)>, <exp(-mu_s - mu_ref)>) over the energies from ``start_eV`` to
        ``end_eV`` (eV) swept at constant speed (one energy if they are equal)."""
        if start_eV == end_eV:
            energies, weights = np.array([start_eV]), np.array([1.0])
        else:
            nodes, weights = np.polynomial.legendre.leggauss(SWEEP_NODES)
            energies, weights = 0.5 * (start_eV + end_eV) + 0.5 * (end_eV - start_eV) * nodes, 0.5 * weights
        sample = np.exp(-self.specimen.absorbance(energies))
        reference = np.exp(-np.array([self._reference(float(energy)) for energy in energies]))
        return float(weights @ sample), float(weights @ (sample * reference))

    def last_gate_eV(self) -> tuple[float, float] | None:
        """The DCM's energy (its readback's scale, eV) at the start and end of the last
        count, as a counter latching an encoder at its gate reports them (None before a
        count)."""
        return self._gate_eV

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        bragg, target = await self._bragg_deg(), await self._bragg_target_deg()  # no task between the reads
        count_time = await self.count_time.get_value()
        bragg_end = bragg
        if self.realtime or bragg != target:  # counting while the DCM sweeps takes real time
            began = time.monotonic()
            await asyncio.sleep(count_time)
            bragg_now = await self._bragg_deg()
            # a preset-time scaler gates in hardware: the count spans count_time from its
            # start however late the software reads it (an event-loop stall delays the next
            # count, it does not widen this one); the gate's end on the sweep, which turns
            # at constant angular speed
            bragg_end = bragg + (bragg_now - bragg) * min(1.0, count_time / (time.monotonic() - began))
        sample, both = self.transmissions(self.photon_energy_eV(bragg), self.photon_energy_eV(bragg_end))
        scale = await self._dcm_offset_eV()
        self._gate_eV = (energy_from_bragg_eV(bragg) + scale, energy_from_bragg_eV(bragg_end) + scale)
        photons = self.flux * count_time
        self._set_i0(float(self._rng.poisson(0.1 * photons)))
        self._set_it(float(self._rng.poisson(0.5 * photons * sample)))
        self._set_iref(float(self._rng.poisson(0.5 * photons * both)))


#: Gauss-Legendre nodes of a simulated count's mean over the energies it sweeps.
SWEEP_NODES = 8


class XasFlySampler(StandardReadable):
    """One sample of a fly scan: ``trigger()`` reads the DCM readback's energy, counts the
    ion chambers once (one ``count_time``), reads the energy again, and publishes
    ``energy_start``, ``energy_end`` and their mean ``energy`` (eV, hinted; the energy of
    the sample). Its reading holds these and the chambers' reading (I0, It, Iref under
    the chambers' own names); ``dcm`` and ``chambers`` are the devices it samples (not
    children: they keep their names). Neutral: works with real and simulated devices.

    The readback of a real Bragg motor record updates at its own rate (10-100 Hz), and is
    read before and after the count in software, so an interval's recorded ends lag the
    motion by up to one update plus the scheduling between the reads and the count's
    gate. Chambers that report the energies of their gate (``last_gate_eV()``: a counter
    latching an encoder would; the twin does) give the ends instead.
    """

    def __init__(self, dcm: DcmEnergy, chambers: IonChambers, name: str = "") -> None:
        self._devices = (dcm, chambers)
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.energy, self._set_energy = soft_signal_r_and_setter(float, math.nan, units="eV")
        with self.add_children_as_readables():
            self.energy_start, self._set_start = soft_signal_r_and_setter(float, math.nan, units="eV")
            self.energy_end, self._set_end = soft_signal_r_and_setter(float, math.nan, units="eV")
        self.add_readables([chambers])
        super().__init__(name=name)

    @property
    def dcm(self) -> DcmEnergy:
        """The DCM whose energy is sampled."""
        return self._devices[0]

    @property
    def chambers(self) -> IonChambers:
        """The ion chambers counted at each sample."""
        return self._devices[1]

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        dcm, chambers = self._devices
        start = await dcm.readback.get_value()
        await chambers.trigger()
        end = await dcm.readback.get_value()
        latched = getattr(chambers, "last_gate_eV", None)
        if latched is not None and latched() is not None:
            start, end = latched()
        self._set_start(start)
        self._set_end(end)
        self._set_energy(0.5 * (start + end))
