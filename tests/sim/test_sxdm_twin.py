"""The simulated nanoprobe against the study (SCIENCE.md section 3), through the analysis.

Rasters of simulated single-crystal particles (`sim.nanoprobe.project_particle`) are rendered
with the nanoprobe's beam (Poisson noise, flat background) and reduced by
`analysis.sxdm.strain_maps`; the particle's footprint (projected thickness > 0 at each raster
point) is the ground truth of where the maps must hold data; the study's ordering (strain
up, rotations down with cycling) is checked on a fresh and a 100-cycle particle.
"""

from __future__ import annotations

import numpy as np
import pytest

from nanostrain.analysis.sxdm import SxdmMaps, strain_maps
from nanostrain.sim.nanoprobe import (
    NanoprobeBeam,
    SurfaceDistortion,
    nanoprobe_geometry,
    project_particle,
    sxdm_sample,
)
from nanostrain.sim.sxdm_render import render_frames

EXPOSURE_S = 0.05
FRAME = (64, 64)


def raster_maps(cycles: int, material: str = "NM91", n: int = 24, step_um: float = 0.2,
                n_theta: int = 9) -> tuple[SxdmMaps, np.ndarray]:
    """Maps of a charged (100 mA/g, 4.3 V) SC particle aged ``cycles`` cycles on an n x n
    raster (step in um) centred on it, and its footprint (thickness > 0 at each raster point)."""
    particle = sxdm_sample(material, cycles)
    crystal = project_particle(particle, 0.1)
    geometry = nanoprobe_geometry(particle.lattice().mean_c_A)
    axis = (np.arange(n) - (n - 1) / 2.0) * step_um
    thickness, q = crystal.sample(*np.meshgrid(axis + 0.013, axis - 0.021, indexing="ij"))
    beam = NanoprobeBeam()
    thetas = geometry.two_theta_deg / 2.0 + np.linspace(-0.5, 0.5, n_theta)
    background = beam.background_cps * EXPOSURE_S
    frames = render_frames(
        geometry, thetas, np.nan_to_num(q), beam.peak_cps_per_um * thickness * EXPOSURE_S,
        beam.peak_sigma_invA(geometry.energy_eV), FRAME, background, rng=np.random.default_rng(cycles),
        dtype=np.uint16,
    )
    return strain_maps(frames, thetas, geometry, background=background, registration=False), thickness > 0


@pytest.fixture(scope="module")
def fresh() -> tuple[SxdmMaps, np.ndarray]:
    return raster_maps(0)


def test_maps_are_nan_off_the_particle_footprint_and_finite_on_it(fresh):
    maps, footprint = fresh
    assert 0.3 < footprint.mean() < 0.8  # the raster sees the particle and empty space around it
    for name in ("dd_over_d", "theta_xy", "theta_xz", "d"):
        values = getattr(maps, name)
        assert np.isnan(values[~footprint]).all(), name
        assert np.isfinite(values[footprint]).mean() >= 0.95, name
    assert not (maps.mask & ~footprint).any()


@pytest.fixture(scope="module")
def cycled() -> tuple[SxdmMaps, np.ndarray]:
    return raster_maps(100)


def test_rotation_spread_falls_and_strain_spread_rises_with_cycling(fresh, cycled):
    """SCIENCE.md section 3: with cycling the strain heterogeneity of SC-NM91 rises and its
    rotations fall (here: the surface bending relaxes, the H2/H3 front sharpens as D drops)."""
    (before, _), (after, _) = fresh, cycled
    assert after.sigma.theta_xy < 0.6 * before.sigma.theta_xy
    assert after.sigma.theta_xz < 0.6 * before.sigma.theta_xz
    assert after.sigma.dd_over_d > 2.0 * before.sigma.dd_over_d


def test_surface_tilt_relaxes_exponentially_with_cycles():
    surface = SurfaceDistortion(tilt_deg=0.04, relaxation_cycles=50.0)
    assert surface.tilt_after(0) == 0.04
    assert surface.tilt_after(100) == pytest.approx(0.04 * np.exp(-2.0), rel=1e-12)
