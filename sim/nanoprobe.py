"""Nanoprobe physics: what a focused beam sees of a single-crystal cathode particle.

The simulated SXDM experiment (SCIENCE.md section 3):

* `sxdm_sample`: a single-crystal `CathodeParticle`, aged, charged to mid-charge;
* `ProjectedCrystal`: the particle as the beam sees it at each stage position (y, x)
  (um): the diffracting thickness t along the beam and the path-averaged sample-frame Q
  of the (003) reflection (1/A, DESIGN.md convention), on a grid of nodes interpolated
  bilinearly in between (in t and t Q, so a beam grazing the edge sees the edge's Q).
* `project_particle`: a `ProjectedCrystal` of a cathode particle's present state. The
  d-spacing of each voxel of a 3D grid is d_003 = c(r) / 3 of its radial shell
  (`CathodeParticle.lattice`, mapped by `radial_field_to_grid`: the core/shell reaction
  front of SC-NM91 mid-charge, an optional reconstructed `SurfaceLayer`, an optional
  `Crack` whose voxels are empty), the lattice rotation of each voxel is a surface
  distortion that bends the (003) planes outwards near the surface and relaxes with the
  particle's cycles n (`SurfaceDistortion`),

      alpha(r) = alpha_s exp(-n / n_relax) exp(-(R - r) / lambda_s),
      theta_xy = alpha(r) y / r,   theta_xz = alpha(r) x / r + sign(crack side) beta / 2,

  (beta: opening angle of the crack's two halves), each voxel's Q is
  `q_from_d_tilts(d, theta_xy, theta_xz)`, and a column along the beam (grid axis z)
  gives t = (valid voxels) x voxel size and Q = mean of its voxels' Q.
* `NanoprobeSimulation`: frames and fluorescence counts at a stage position and rocking
  angle. The beam position on the sample is the stage position minus the drift of the
  rotation axis, d(theta) (`LinearDrift`, um), so the per-angle maps of a rocking raster
  are shifted copies of each other and need registration. A frame is one Bragg peak
  rendered by `sim.sxdm_render.render_frames`: an isotropic 3D Gaussian around Q of
  amplitude A = rate t exposure (flux / nominal flux) counts in its brightest pixel,
  width from the convergence of the focused beam (`NanoprobeBeam.peak_sigma_invA`), on a
  flat background, Poisson noise, saturating at the detector's dtype. Fluorescence counts
  ~ Poisson(exposure (flux / nominal) (rate_xrf t + background)).

Units: stage positions and lengths in um, d in A, Q in 1/A, angles in degrees,
exposures in s, rates in counts/s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray
from scipy import ndimage

from nanostrain.analysis.sxdm_geometry import SxdmGeometry, bragg_angle_003, q_from_d_tilts
from nanostrain.analysis.units import FWHM_PER_SIGMA, wavelength_A, wavenumber_invA

from .cathode import CathodeParticle, Crack, SurfaceLayer, charged_particle
from .sxdm_render import render_frames

__all__ = [
    "LinearDrift",
    "NanoprobeBeam",
    "NanoprobeSimulation",
    "ProjectedCrystal",
    "SurfaceDistortion",
    "nanoprobe_geometry",
    "project_particle",
    "sxdm_sample",
]

Drift = Callable[[float], tuple[float, float]]
"""Drift model: rocking angle (deg) -> (dy, dx) shift of the beam on the sample (um)."""


@dataclass(frozen=True)
class ProjectedCrystal:
    """A crystal as seen through its thickness, on a grid of stage positions.

    thickness_um (ny, nx): diffracting path length along the beam at each node (0 = no
    crystal); q_invA (3, ny, nx): path-averaged sample-frame Q at each node (1/A, any
    value where thickness is 0); origin_um (y, x): stage position of node [0, 0];
    spacing_um: node spacing (both axes).
    """

    thickness_um: NDArray[np.float64]
    q_invA: NDArray[np.float64]
    origin_um: tuple[float, float]
    spacing_um: float

    def __post_init__(self) -> None:
        if self.thickness_um.ndim != 2 or self.q_invA.shape != (3, *self.thickness_um.shape):
            raise ValueError(
                f"thickness_um must be (ny, nx) and q_invA (3, ny, nx); got "
                f"{self.thickness_um.shape}, {self.q_invA.shape}"
            )
        if not self.spacing_um > 0:
            raise ValueError(f"spacing_um must be > 0, got {self.spacing_um}")
        # t and t Q, the quantities interpolated (a frozen dataclass: set once here)
        object.__setattr__(self, "_weighted", np.concatenate([self.thickness_um[None], self.thickness_um * self.q_invA]))

    @classmethod
    def from_maps(
        cls,
        d_A: ArrayLike,
        theta_xy_deg: ArrayLike,
        theta_xz_deg: ArrayLike,
        thickness_um: ArrayLike,
        origin_um: tuple[float, float],
        spacing_um: float,
    ) -> ProjectedCrystal:
        """A crystal of known maps (ny, nx): d (A) and rotations (deg) via `q_from_d_tilts`."""
        thickness = np.asarray(thickness_um, dtype=np.float64)
        d = np.where(thickness > 0, np.asarray(d_A, dtype=np.float64), 1.0)  # any finite d outside
        q = q_from_d_tilts(np.broadcast_to(d, thickness.shape), theta_xy_deg, theta_xz_deg)
        return cls(thickness, q, (float(origin_um[0]), float(origin_um[1])), float(spacing_um))

    def sample(self, y_um: ArrayLike, x_um: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Thickness (um) and Q (3, ...) (1/A) at stage positions (y, x), bilinear in t and t Q.

        Outside the grid t = 0; where t = 0, Q is NaN.
        """
        y, x = np.broadcast_arrays(np.asarray(y_um, dtype=np.float64), np.asarray(x_um, dtype=np.float64))
        coords = np.stack([(y - self.origin_um[0]) / self.spacing_um, (x - self.origin_um[1]) / self.spacing_um])
        flat = coords.reshape(2, -1)
        t, *tq = (ndimage.map_coordinates(w, flat, order=1, mode="constant", cval=0.0) for w in self._weighted)
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.where(t > 0, tq / t, np.nan)
        return t.reshape(y.shape), q.reshape((3, *y.shape))


def sxdm_sample(
    material: str, cycles: int = 0, current_mA_g: float = 100.0, stop_V: float = 4.3
) -> CathodeParticle:
    """A sample of the SXDM comparison: a single-crystal particle aged ``cycles`` cycles
    (`CathodeParticle.age`), then charged at ``current_mA_g`` (mA/g, 0.25 mAh/g steps)
    until the cell reaches ``stop_V`` (V vs Li/Li+): mid-charge (4.25-4.35 V) SC-NM91
    holds an H3 shell over an H2 core, which a fully charged (4.5 V) particle no longer shows."""
    return charged_particle(material, current_mA_g, stop_V, cycles=cycles)


@dataclass(frozen=True)
class SurfaceDistortion:
    """Lattice rotation near the surface of a particle cycled n times (`CathodeParticle.cycles_aged`):

        alpha(r) = tilt_deg exp(-n / relaxation_cycles) exp(-(R - r) / depth_um)     (deg)

    The as-made bending of the planes near the surface relaxes as cycling moves
    dislocations through the crystal (the rotations fall with cycling while the strain from
    the slower diffusion rises, SCIENCE.md section 3): x 0.37 after 100 cycles by default.
    """

    tilt_deg: float = 0.03
    depth_um: float = 0.3
    relaxation_cycles: float = 100.0

    def tilt_after(self, cycles: int) -> float:
        """Surface tilt (deg) of a particle cycled ``cycles`` times."""
        return self.tilt_deg * float(np.exp(-cycles / self.relaxation_cycles))


def project_particle(
    particle: CathodeParticle,
    spacing_um: float = 0.05,
    *,
    centre_um: tuple[float, float] = (0.0, 0.0),
    surface: SurfaceDistortion | None = SurfaceDistortion(),
    surface_layer: SurfaceLayer | None = None,
    crack: Crack | None = None,
    crack_tilt_deg: float = 0.0,
) -> ProjectedCrystal:
    """The `ProjectedCrystal` of a cathode particle's current state (module docstring).

    spacing_um: voxel and node size (um); centre_um (y, x): stage position of the
    particle centre; surface: near-surface lattice rotation (None: none); surface_layer:
    a surface shell of fixed d (A) (e.g. a reconstructed layer); crack: a planar crack,
    normal (z, y, x) with z along the beam; crack_tilt_deg: opening angle between its two
    halves (deg, split +-1/2 in theta_xz).
    """
    if not spacing_um > 0:
        raise ValueError(f"spacing_um must be > 0, got {spacing_um}")
    radius = particle.radius_um
    n = int(np.ceil(2.0 * radius / spacing_um)) + 2  # the sphere plus an empty node each side
    d_per_shell = particle.lattice().c_A / 3.0  # d_003 = c / 3
    d = particle.radial_field_to_grid(
        d_per_shell, (n, n, n), spacing_um, surface_layer=surface_layer, crack=crack
    )
    z, y, x = np.meshgrid(*[(np.arange(n) + 0.5 - n / 2.0) * spacing_um] * 3, indexing="ij", sparse=True)
    r = np.sqrt(z * z + y * y + x * x)
    theta_xy = np.zeros(d.shape)
    theta_xz = np.zeros(d.shape)
    if surface is not None:
        alpha = surface.tilt_after(particle.cycles_aged) * np.exp(-(radius - r) / surface.depth_um) / np.maximum(r, 1e-12)
        theta_xy += alpha * y
        theta_xz += alpha * x
    if crack is not None and crack_tilt_deg:
        normal = np.asarray(crack.normal, dtype=np.float64)
        side = normal[0] * z + normal[1] * y + normal[2] * x - crack.offset_um * np.linalg.norm(normal)
        theta_xz += np.sign(side) * crack_tilt_deg / 2.0
    valid = np.isfinite(d)
    q = q_from_d_tilts(np.where(valid, d, 1.0), theta_xy, theta_xz) * valid
    count = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        q_column = np.where(count > 0, q.sum(axis=1) / count, 0.0)
    origin = (centre_um[0] - (n / 2.0 - 0.5) * spacing_um, centre_um[1] - (n / 2.0 - 0.5) * spacing_um)
    return ProjectedCrystal(count * spacing_um, q_column, origin, spacing_um)


@dataclass(frozen=True)
class LinearDrift:
    """Drift of the beam on the sample growing linearly with the rocking angle:
    d(theta) = rate (theta - theta_ref) (um; rate in um/deg per (y, x))."""

    theta_ref_deg: float
    rate_um_per_deg: tuple[float, float] = (0.3, -0.2)

    def __call__(self, theta_deg: float) -> tuple[float, float]:
        offset = theta_deg - self.theta_ref_deg
        return self.rate_um_per_deg[0] * offset, self.rate_um_per_deg[1] * offset


@dataclass(frozen=True)
class NanoprobeBeam:
    """The focused beam and the count rates it produces.

    focus_nm: focal spot FWHM (nm); a diffraction-limited lens of numerical aperture NA
    focuses to 0.51 lambda / NA, so the beam converges over 2 NA = 1.02 lambda / focus
    (rad). The default 90 nm (1.2 mrad at 12 keV) keeps the Bragg peak inside a 64 x 64
    detector at 0.35 m; HXN's ~30 nm (3.5 mrad) needs a 256-pixel detector.
    peak_cps_per_um: counts/s in the peak's brightest pixel per um of diffracting
    thickness at the nominal flux; background_cps: counts/s per detector pixel;
    xrf_cps_per_um, xrf_background_cps: fluorescence counts/s per um of thickness and
    away from the particle.
    """

    focus_nm: float = 90.0
    peak_cps_per_um: float = 1.25e4
    background_cps: float = 10.0
    xrf_cps_per_um: float = 2.0e4
    xrf_background_cps: float = 50.0

    def convergence_rad(self, energy_eV: float) -> float:
        """Full convergence angle 2 NA = 1.02 lambda / focus (rad), lambda = hc / E (E in eV)."""
        return 1.02 * float(wavelength_A(energy_eV)) / (self.focus_nm * 10.0)

    def peak_sigma_invA(self, energy_eV: float) -> float:
        """Width (sigma, 1/A) of the Bragg peak in reciprocal space: the incident wave
        vectors of a converging beam spread over K 2 NA (FWHM), sigma = K 2 NA / 2.3548
        (E in eV)."""
        return float(wavenumber_invA(energy_eV)) * self.convergence_rad(energy_eV) / FWHM_PER_SIGMA


def nanoprobe_geometry(
    c_A: float = 14.0,
    energy_eV: float = 12000.0,
    frame_shape: tuple[int, int] = (64, 64),
    distance_m: float = 0.35,
    pixel_m: float = 55e-6,
) -> SxdmGeometry:
    """A pixel-array detector (default: a 64 x 64 crop of a Merlin, 55 um pixels, at 0.35 m)
    centred on the (003) reflection of a cell of axis c (A): 2theta_0 = 2 theta_B(c / 3);
    photon energy in eV."""
    return SxdmGeometry(
        energy_eV=energy_eV,
        distance_m=distance_m,
        pixel_m=pixel_m,
        center_px=((frame_shape[0] - 1) / 2.0, (frame_shape[1] - 1) / 2.0),
        two_theta_deg=2.0 * float(bragg_angle_003(c_A, energy_eV)),
    )


@dataclass
class NanoprobeSimulation:
    """The simulated nanoprobe: a mounted crystal, the beam, the detector geometry, drift.

    geometry: detector geometry (the arm's 2theta follows the sample: `point_detector_at`);
    frame_shape: detector (rows, cols); crystal: what is mounted (None: nothing
    diffracts); beam: `NanoprobeBeam`; drift: theta (deg) -> beam shift on the sample
    (dy, dx) (um), default `LinearDrift` about the nominal Bragg angle 2theta_0 / 2;
    dtype: detector pixel type (counts saturate at its maximum); seed: noise seed.
    """

    geometry: SxdmGeometry = field(default_factory=nanoprobe_geometry)
    frame_shape: tuple[int, int] = (64, 64)
    crystal: ProjectedCrystal | None = None
    beam: NanoprobeBeam = field(default_factory=NanoprobeBeam)
    drift: Drift | None = None
    dtype: DTypeLike = np.uint16
    seed: int | None = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def mount(self, crystal: ProjectedCrystal | None) -> None:
        """Put a crystal in the beam (None: take it out)."""
        self.crystal = crystal

    def point_detector_at(self, c_A: float) -> None:
        """Move the detector arm to 2theta of the (003) reflection of a cell of axis c (A)."""
        self.geometry = dataclasses.replace(
            self.geometry, two_theta_deg=2.0 * float(bragg_angle_003(c_A, self.geometry.energy_eV))
        )

    def beam_position(self, theta_deg: float, y_um: float, x_um: float) -> tuple[float, float]:
        """Where the beam hits the sample (um) with the stage at (y, x) and rotation at theta:
        the stage position minus the drift d(theta)."""
        drift = self.drift or LinearDrift(self.geometry.two_theta_deg / 2.0)
        dy, dx = drift(theta_deg)
        return y_um - dy, x_um - dx

    def _thickness_and_q(self, theta_deg: float, y_um: float, x_um: float) -> tuple[float, NDArray[np.float64]]:
        if self.crystal is None:
            return 0.0, np.full(3, np.nan)
        t, q = self.crystal.sample(*self.beam_position(theta_deg, y_um, x_um))
        return float(t), q

    def frame(
        self, theta_deg: float, y_um: float, x_um: float, exposure_s: float, flux_scale: float = 1.0
    ) -> NDArray:
        """One detector frame (rows, cols) of counts, see the module docstring."""
        thickness, q = self._thickness_and_q(theta_deg, y_um, x_um)
        amplitude = self.beam.peak_cps_per_um * thickness * exposure_s * flux_scale
        if not amplitude > 0:
            q = np.zeros(3)  # a Q render_frames skips at zero amplitude
        return render_frames(
            self.geometry,
            [theta_deg],
            q.reshape(3, 1, 1),
            np.array([[max(amplitude, 0.0)]]),
            self.beam.peak_sigma_invA(self.geometry.energy_eV),
            self.frame_shape,
            background=self.beam.background_cps * exposure_s * flux_scale,
            rng=self.rng,
            dtype=self.dtype,
        )[0, 0, 0]

    def xrf_counts(
        self, theta_deg: float, y_um: float, x_um: float, exposure_s: float, flux_scale: float = 1.0
    ) -> float:
        """Fluorescence counts in the ROI, see the module docstring."""
        thickness, _ = self._thickness_and_q(theta_deg, y_um, x_um)
        rate = self.beam.xrf_cps_per_um * thickness + self.beam.xrf_background_cps
        return float(self.rng.poisson(rate * exposure_s * flux_scale))
