"""The simulated sample a `nanostrain.schema.sample.SampleRecord` describes."""

from __future__ import annotations

from nanostrain.schema.sample import SampleRecord

from .cathode import CathodeParticle, charged_particle

__all__ = ["cathode_particle"]


def cathode_particle(record: SampleRecord) -> CathodeParticle:
    """The cathode particle of ``record``: aged ``cycles`` cycles (`CathodeParticle.age`),
    then, if ``charge_V`` is given, charged at ``current_mA_g`` (mA/g) to ``charge_V``
    (V vs Li/Li+) (`charged_particle`). Raises ValueError for a calibrant record and for
    an unknown material."""
    if record.material is None:
        raise ValueError(f"{record.name} is not a cathode particle")
    if record.charge_V is not None:
        return charged_particle(record.material, record.current_mA_g, record.charge_V, record.morphology,
                                cycles=record.cycles)
    particle = CathodeParticle(record.material, record.morphology)
    if record.cycles:
        particle.age(record.cycles)
    return particle
