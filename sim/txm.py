"""Simulated transmission X-ray microscope (TXM) at the Ni K edge (SCIENCE.md section 4).

What the simulated full-field microscope at NSLS-II 18-ID FXI sees: a 3D cathode particle
whose voxels carry the Ni valence of the cathode simulator, imaged in parallel beam at any
photon energy and rotation angle, through a flat field, onto a camera with dark current
and Poisson noise. The device layer (`nanostrain.devices.txm`) reads the motors and the
shutter and asks `TxmImaging.frame` for the picture.

Specimen (units: eV, um; attenuation per voxel = mu [1/um] x voxel size [um]):

* Ni valence v per radial shell from `CathodeParticle.ni_valence`, mapped to voxels with
  `radial_field_to_grid`. White-line energy per voxel

      E_wl(v) = WL_NI3_EV + WL_EV_PER_VALENCE (v - 3)       (8349.6 eV at Ni3+, +2.0 eV per
                                                              unit of valence, so Ni4+ sits at 8351.6 eV)

  (Ni K-edge shifts of ~2 eV between pristine and charged Ni-rich layered oxides).
* mu(E) = rho [ (mu/rho)_matrix (E/E_ref)^-3 + w_Ni d(mu/rho)_Ni m(E; E_wl) ]: the
  non-resonant attenuation of the compound below the Ni edge (~45 cm2/g for NC91/NM91,
  falling as E^-3), plus the Ni K-edge jump d(mu/rho)_Ni = 285 cm2/g (NIST XCOM: 44 cm2/g
  below, 329 cm2/g above 8333 eV) x the Ni mass fraction w_Ni, shaped by the unit-step
  XANES model m = `ni_k_edge_xanes` (maximum exactly at E_wl). For LiNi0.9Co0.1O2
  (4.78 g/cm3, w_Ni = 0.54) the edge jump is 0.074 /um: 0.3 absorbance across a 4 um
  particle, 0.006 per 80 nm voxel.
* Ni reference foil (energy calibration): uniform, 5 um thick, mu = rho_Ni [44 cm2/g +
  285 cm2/g (1/2 + arctan((E - 8333 eV)/G)/pi)], G = 1 eV: its derivative peaks at
  8333 eV, the tabulated Ni K edge.

Imaging (counts per pixel, per frame of exposure t seconds):

    I = Poisson( t Phi(E) F(r, c) exp(-A) ) + D(r, c) + read noise,

with A the parallel-beam projection (`sim.tomography.forward_project`, detector column j at
t = j - n//2 from the rotation axis) shifted by the sample position and a settling
jitter, blurred by a Gaussian of sigma = blur per mm x zone-plate defocus (mm), F a
smooth flat-field pattern (mean 1), Phi the flux (counts/pixel/s), D a dark offset
pattern. The projections of one energy are computed once, on a grid of angles over
0-180 deg inclusive (180-360 deg are their mirror images for an odd number of columns,
projected exactly for an even one), and cached: a frame costs one cubic shift, an
exponential and the noise.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.ndimage
from numpy.typing import ArrayLike

from .cathode import CathodeParticle, charged_particle
from .tomography import forward_project
from .xanes_model import ni_k_edge_xanes

__all__ = [
    "NI_FOIL_EDGE_EV",
    "WL_EV_PER_VALENCE",
    "WL_NI3_EV",
    "NiFoil",
    "Specimen",
    "TxmImaging",
    "TxmSample",
    "charged_particle",
    "particle_sample",
    "whiteline_from_valence",
]

#: Ni K edge of the metal foil (first inflection point), eV.
NI_FOIL_EDGE_EV = 8333.0
#: White-line energy of Ni3+ in a layered oxide, eV.
WL_NI3_EV = 8349.6
#: White-line shift per unit of Ni valence, eV.
WL_EV_PER_VALENCE = 2.0
#: Reference energy of the E^-3 law of non-resonant attenuation, eV.
E_REF_EV = 8350.0
#: Ni K-edge jump of the Ni mass attenuation coefficient, cm2/g (329 - 44, NIST XCOM).
NI_EDGE_JUMP_CM2_G = 285.0
#: Ni mass attenuation just below its K edge, cm2/g.
NI_BELOW_EDGE_CM2_G = 44.0
#: Mass attenuation of the whole NC91/NM91 compound below the Ni K edge, cm2/g (+-15 %).
MATRIX_CM2_G = 45.0
NI_MOLAR_MASS_G_MOL = 58.693
NI_DENSITY_G_CM3 = 8.908
_PER_CM_TO_PER_UM = 1e-4


def whiteline_from_valence(valence: ArrayLike) -> np.ndarray:
    """E_wl = WL_NI3_EV + WL_EV_PER_VALENCE (v - 3), eV, for Ni valence v."""
    return WL_NI3_EV + WL_EV_PER_VALENCE * (np.asarray(valence, dtype=np.float64) - 3.0)


class Specimen(Protocol):
    """What the microscope images: a name and absorbance projections at one energy."""

    name: str
    shape: tuple[int, int, int]

    def projections(self, energy_eV: float, angles_deg: np.ndarray) -> np.ndarray:
        """(n_angles, rows, cols) absorbance -ln T, rotation axis at column cols//2."""
        ...


@dataclass(frozen=True)
class TxmSample:
    """A voxelised specimen, (rows, cols, cols) = (z along the rotation axis, y, x).

    edge_jump : Ni K-edge jump of the attenuation per voxel (absorbance per voxel).
    background : non-resonant attenuation per voxel at E_REF_EV.
    whiteline_eV : WL energy per voxel, eV; NaN where there is no Ni (outside).
    voxel_um : voxel edge, um (= the microscope's pixel size at the sample).
    """

    edge_jump: np.ndarray
    background: np.ndarray
    whiteline_eV: np.ndarray
    voxel_um: float
    name: str = "sample"

    def __post_init__(self) -> None:
        shape = self.whiteline_eV.shape
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"a TXM sample is (rows, n, n), got {shape}")
        if self.edge_jump.shape != shape or self.background.shape != shape:
            raise ValueError("edge_jump, background and whiteline_eV must have one shape")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.whiteline_eV.shape

    @property
    def mask(self) -> np.ndarray:
        """Voxels holding Ni (finite WL energy)."""
        return np.isfinite(self.whiteline_eV)

    def attenuation(self, energy_eV: float) -> np.ndarray:
        """(rows, n, n) float32 attenuation per voxel at ``energy_eV``:
        background (E/E_ref)^-3 + edge_jump m(E; E_wl)."""
        inside = self.mask
        volume = self.background * (energy_eV / E_REF_EV) ** -3
        volume[inside] += self.edge_jump[inside] * ni_k_edge_xanes(
            np.array([energy_eV]), self.whiteline_eV[inside]
        )[:, 0]
        return volume.astype(np.float32)

    def projections(self, energy_eV: float, angles_deg: np.ndarray) -> np.ndarray:
        return forward_project(self.attenuation(energy_eV), angles_deg)


@dataclass(frozen=True)
class NiFoil:
    """Ni metal reference foil filling the field of view (energy calibration).

    Absorbance t rho_Ni [NI_BELOW_EDGE + NI_EDGE_JUMP (1/2 + arctan((E - E0)/G)/pi)],
    whose derivative in E peaks at E0 = ``edge_eV``.
    """

    shape: tuple[int, int, int]
    thickness_um: float = 5.0
    edge_eV: float = NI_FOIL_EDGE_EV
    edge_width_eV: float = 1.0
    name: str = "Ni foil"

    def absorbance(self, energy_eV: float) -> float:
        step = 0.5 + np.arctan((energy_eV - self.edge_eV) / self.edge_width_eV) / np.pi
        mu_rho = NI_BELOW_EDGE_CM2_G + NI_EDGE_JUMP_CM2_G * step
        return float(self.thickness_um * NI_DENSITY_G_CM3 * mu_rho * _PER_CM_TO_PER_UM)

    def projections(self, energy_eV: float, angles_deg: np.ndarray) -> np.ndarray:
        rows, _, cols = self.shape
        return np.full((len(angles_deg), rows, cols), self.absorbance(energy_eV), np.float32)


def particle_sample(
    particle: CathodeParticle,
    shape: tuple[int, int, int],
    voxel_um: float,
    centre_offset_um: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> TxmSample:
    """Voxelise ``particle``: its per-shell Ni valence becomes the WL energy per voxel
    (`whiteline_from_valence`), its composition the edge jump and background.

    shape : (rows, n, n); voxel_um : voxel edge (um); centre_offset_um : (z, y, x) offset of
    the particle centre from the rotation axis (which runs along z through voxel
    (n//2, n//2) of the (y, x) plane, `analysis.txm`'s convention; z centred on the grid).
    """
    material = particle.material
    wl_shells = whiteline_from_valence(particle.ni_valence())
    on_axis = (0.5 * shape[0], shape[1] // 2 + 0.5, shape[2] // 2 + 0.5)  # voxel centres at (i + 1/2)
    centre = tuple(voxel_um * c + d for c, d in zip(on_axis, centre_offset_um, strict=True))
    whiteline = particle.radial_field_to_grid(wl_shells, shape, voxel_um, centre_um=centre)
    inside = np.isfinite(whiteline)
    ni_mass_fraction = material.ni_fraction * NI_MOLAR_MASS_G_MOL / material.molar_mass_g_mol
    per_voxel = material.density_g_cm3 * _PER_CM_TO_PER_UM * voxel_um  # (cm2/g) -> per voxel
    name = f"{'charged ' if particle.capacity_mAh_g > 0 else ''}{particle.morphology.name}-{material.name}"
    return TxmSample(
        edge_jump=np.where(inside, ni_mass_fraction * NI_EDGE_JUMP_CM2_G * per_voxel, 0.0),
        background=np.where(inside, MATRIX_CM2_G * per_voxel, 0.0),
        whiteline_eV=whiteline,
        voxel_um=float(voxel_um),
        name=name,
    )


@dataclass
class TxmImaging:
    """The microscope's imaging chain: projections, flat field, camera.

    shape : (rows, cols) of a frame.
    flux : mean flat-field rate at E_REF_EV, counts/pixel/s.
    flat_nonuniformity : RMS of the smooth flat-field pattern F (mean 1).
    dark_counts : mean dark offset per pixel (counts), with a +-5 % fixed pattern.
    read_noise : Gaussian read noise RMS, counts.
    angle_step_deg : grid of the cached projections (frames at other angles are projected
        exactly, one at a time).
    seed : noise, flat and dark patterns.
    """

    shape: tuple[int, int]
    flux: float = 2.0e5
    flat_nonuniformity: float = 0.1
    dark_counts: float = 100.0
    read_noise: float = 2.0
    angle_step_deg: float = 0.5
    seed: int | None = 0
    _cache: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        rows, cols = self.shape
        pattern = scipy.ndimage.gaussian_filter(self.rng.standard_normal(self.shape), cols / 6)
        pattern = (pattern - pattern.mean()) * (self.flat_nonuniformity / pattern.std())
        tilt = 0.05 * (np.arange(cols) - (cols - 1) / 2) / cols  # +-2.5 % across
        self.flat_pattern = (1.0 + pattern + tilt[None, :]).astype(np.float32)
        self.dark_pattern = (self.dark_counts * (1 + 0.05 * self.rng.standard_normal(self.shape))).astype(
            np.float32
        )
        self.grid_deg = np.arange(0.0, 180.0 + 0.5 * self.angle_step_deg, self.angle_step_deg)

    def flux_at(self, energy_eV: float) -> float:
        """Phi(E): the source's smooth spectrum, -1 % per 10 eV above E_REF_EV."""
        return self.flux * (1.0 - 1e-3 * (energy_eV - E_REF_EV))

    def projection(self, specimen: Specimen, energy_eV: float, angle_deg: float) -> np.ndarray:
        """(rows, cols) absorbance of ``specimen`` at ``energy_eV`` and ``angle_deg``."""
        if specimen.shape[0] != self.shape[0] or specimen.shape[2] != self.shape[1]:
            raise ValueError(f"specimen {specimen.shape} does not fit the {self.shape} camera")
        key = (id(specimen), round(float(energy_eV), 4))
        if key not in self._cache:
            self._cache[key] = specimen.projections(energy_eV, self.grid_deg)
            if len(self._cache) > 2:  # the current energy and the one before
                self._cache.popitem(last=False)
        angle = float(angle_deg) % 360.0
        # p(theta + 180, t) = p(theta, -t): reversed columns about the axis (n - 1)/2 = n//2
        # at odd n; at even n the axis is column n/2 and column 0 would need column n.
        mirrored = angle > 180.0 and self.shape[1] % 2 == 1
        folded = angle - 180.0 if mirrored else angle
        index = folded / self.angle_step_deg
        if abs(index - round(index)) < 1e-6 and round(index) < self.grid_deg.size:
            image = self._cache[key][round(index)]
        else:
            image = specimen.projections(energy_eV, np.array([folded]))[0]
        return image[:, ::-1] if mirrored else image

    def frame(
        self,
        specimen: Specimen | None,
        energy_eV: float,
        angle_deg: float,
        exposure_s: float,
        *,
        beam: bool = True,
        shift_px: tuple[float, float] = (0.0, 0.0),
        blur_px: float = 0.0,
    ) -> np.ndarray:
        """One camera frame (uint16 counts).

        specimen : what is in the field of view (None: nothing, a flat field).
        beam : False when the shutter is closed (a dark frame).
        shift_px : (rows, cols) displacement of the specimen's image; a specimen moved
            further than the frame is out of the field of view.
        blur_px : Gaussian blur sigma of the image (defocus), pixels.
        """
        rate = np.zeros(self.shape, dtype=np.float32)
        if beam:
            rate = self.flux_at(energy_eV) * self.flat_pattern
            if specimen is not None and all(abs(s) < n for s, n in zip(shift_px, self.shape, strict=True)):
                absorbance = self.projection(specimen, energy_eV, angle_deg)
                if any(shift_px):
                    # edges continued: a particle's are empty, a foil fills the field of view
                    absorbance = scipy.ndimage.shift(absorbance, shift_px, order=3, mode="nearest")
                rate = rate * np.exp(-absorbance)
            if blur_px > 0.05:
                rate = scipy.ndimage.gaussian_filter(rate, blur_px, mode="nearest")
        counts = self.rng.poisson(rate * exposure_s).astype(np.float32)
        counts += self.dark_pattern + self.read_noise * self.rng.standard_normal(self.shape)
        return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
