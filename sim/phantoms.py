"""Phantoms with a known answer for TXM tomography and TXM-XANES (SCIENCE.md section 4).

Coordinates are those of `analysis.txm` and scikit-image (parallel beam): pixel (row r,
column c) sits at x = c - n//2, y = n//2 - r from the rotation axis (y up); the
projection at angle theta (degrees) is the line integral along
x cos(theta) + y sin(theta) = t, and detector column j sees t = j - center (n//2 by
default).

* `Ellipse`, `SHEPP_LOGAN`: sums of uniform ellipses (the modified Shepp-Logan head),
  rasterised by `ellipse_image` and projected exactly by `ellipse_sinogram`;
* `particle_phantom`: a spherical cathode particle with a radial white-line gradient whose
  attenuation at any energy follows `sim.xanes_model.ni_k_edge_xanes`.

Attenuation per pixel (voxel); sinograms in pixels x attenuation (absorbance -ln T).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .xanes_model import ni_k_edge_xanes

__all__ = [
    "SHEPP_LOGAN",
    "Ellipse",
    "ParticlePhantom",
    "ellipse_image",
    "ellipse_sinogram",
    "particle_phantom",
]


@dataclass(frozen=True)
class Ellipse:
    """Uniform ellipse: ``value`` (attenuation per pixel) inside, centre (x, y) and
    semi-axes a (along x before rotation), b in pixels, rotated by ``angle_deg``
    counter-clockwise; coordinates as in the module notes (from the rotation axis)."""

    value: float
    a: float
    b: float
    x: float = 0.0
    y: float = 0.0
    angle_deg: float = 0.0

    def scaled(self, radius: float) -> Ellipse:
        """The ellipse with lengths multiplied by ``radius`` (pixels)."""
        return Ellipse(
            self.value,
            self.a * radius,
            self.b * radius,
            self.x * radius,
            self.y * radius,
            self.angle_deg,
        )


# Modified Shepp-Logan head phantom (Toft, 1996) in units of its outer radius.
SHEPP_LOGAN = (
    Ellipse(1.0, 0.69, 0.92),
    Ellipse(-0.8, 0.6624, 0.874, 0.0, -0.0184),
    Ellipse(-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    Ellipse(-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    Ellipse(0.1, 0.21, 0.25, 0.0, 0.35),
    Ellipse(0.1, 0.046, 0.046, 0.0, 0.1),
    Ellipse(0.1, 0.046, 0.046, 0.0, -0.1),
    Ellipse(0.1, 0.046, 0.023, -0.08, -0.605),
    Ellipse(0.1, 0.023, 0.023, 0.0, -0.606),
    Ellipse(0.1, 0.023, 0.046, 0.06, -0.605),
)


def ellipse_image(ellipses: tuple[Ellipse, ...], n: int, supersample: int = 4) -> np.ndarray:
    """(n, n) image of summed ellipses, each pixel averaged over supersample^2 points."""
    centres = np.arange(n) - n // 2
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    image = np.zeros((n, n))
    for dx_sub in offsets:
        for dy_sub in offsets:
            x = (centres + dx_sub)[None, :]
            y = -(centres + dy_sub)[:, None]  # rows, y up
            for e in ellipses:
                phi = np.deg2rad(e.angle_deg)
                along = ((x - e.x) * np.cos(phi) + (y - e.y) * np.sin(phi)) / e.a
                across = (-(x - e.x) * np.sin(phi) + (y - e.y) * np.cos(phi)) / e.b
                image += e.value * (along**2 + across**2 <= 1.0)
    return image / supersample**2


def ellipse_sinogram(
    ellipses: tuple[Ellipse, ...], angles_deg: ArrayLike, n_cols: int, center: float | None = None
) -> np.ndarray:
    """Exact parallel-beam line integrals of summed ellipses, (n_angles, n_cols).

    For an ellipse (rho, a, b, x0, y0, phi) and s = t - x0 cos theta - y0 sin theta,
    q^2 = a^2 cos^2(theta - phi) + b^2 sin^2(theta - phi):
    p(t) = 2 rho a b sqrt(q^2 - s^2) / q^2 for |s| <= q, else 0 (Kak & Slaney eq. 3.5);
    t = j - center at detector column j (center None: n_cols//2).
    """
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))[:, None]
    t = np.arange(n_cols) - (n_cols // 2 if center is None else center)
    sinogram = np.zeros((theta.size, n_cols))
    for e in ellipses:
        s = t - e.x * np.cos(theta) - e.y * np.sin(theta)
        relative = theta - np.deg2rad(e.angle_deg)
        q2 = (e.a * np.cos(relative)) ** 2 + (e.b * np.sin(relative)) ** 2
        sinogram += 2.0 * e.value * e.a * e.b * np.sqrt(np.clip(q2 - s * s, 0.0, None)) / q2
    return sinogram


@dataclass(frozen=True)
class ParticlePhantom:
    """Spherical cathode particle with a radial white-line gradient (core to surface).

    edge_step : (nz, ny, nx) Ni K-edge step of the attenuation per voxel (0 outside).
    whiteline_eV : (nz, ny, nx) WL energy, eV; NaN outside the particle.
    """

    edge_step: np.ndarray
    whiteline_eV: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """Voxels inside the particle."""
        return np.isfinite(self.whiteline_eV)

    def attenuation(self, energies_eV: ArrayLike, **model: float) -> np.ndarray:
        """(n_energies, nz, ny, nx) attenuation per voxel: edge_step x :func:`ni_k_edge_xanes`.

        ``model`` passes shape parameters (except ``edge_step``) to the XANES model.
        """
        energies = np.asarray(energies_eV, dtype=np.float64)
        inside = self.mask
        volume = np.zeros((energies.size, *self.edge_step.shape))
        spectra = ni_k_edge_xanes(energies, self.whiteline_eV[inside], **model)
        volume[:, inside] = (spectra * self.edge_step[inside, None]).T
        return volume


def particle_phantom(
    shape: tuple[int, int, int],
    radius_px: float,
    wl_core_eV: float = 8350.6,
    wl_surface_eV: float = 8349.4,
    edge_step: float = 0.01,
) -> ParticlePhantom:
    """Sphere of radius ``radius_px`` centred on the rotation axis of an (nz, ny, nx) grid.

    E_wl(r) = wl_core_eV + (wl_surface_eV - wl_core_eV) r / R for voxel centres with
    r <= R (a reduced surface layer, as in charged Ni-rich cathodes). For a continuous
    sphere the voxel distribution of E_wl has mean E_core + 3/4 dE and standard
    deviation sqrt(3/80) |dE| = 0.194 |dE| (dE = surface - core). ``edge_step`` is the
    attenuation per voxel of the Ni K-edge step (~0.01 for 40 nm voxels of NMC).
    """
    axes = [np.arange(size) - size // 2 for size in shape]  # the axis through voxel n//2
    z, y, x = np.meshgrid(*axes, indexing="ij")
    relative = np.sqrt(x * x + y * y + z * z) / radius_px
    inside = relative <= 1.0
    whiteline = np.where(inside, wl_core_eV + (wl_surface_eV - wl_core_eV) * relative, np.nan)
    return ParticlePhantom(edge_step=np.where(inside, edge_step, 0.0), whiteline_eV=whiteline)
