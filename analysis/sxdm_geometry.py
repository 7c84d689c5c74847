"""SXDM reciprocal-space geometry: detector pixel + rocking angle <-> Q in the sample frame.

The convention is the one of the 5D analysis used by the reference study (DESIGN.md,
"SXDM reciprocal space"); angles are radians inside, degrees at every public interface.

Detector pixel (row y, column x), centre (y_c, x_c), pixel size p, distance D::

    2theta = 2theta_0 + (x - x_c) p / D
    gamma  = gamma_0  + (y_c - y) p / D
    alpha  = arccos(cos 2theta / cos gamma)

Lab frame (incident beam along +z, K = 2 pi / lambda, lambda[A] = hc / E = 12398.419843320026 / E[eV],
`analysis.units`)::

    q_x = K cos gamma sin alpha,   q_y = K sin gamma,   q_z = K cos gamma cos alpha - K

so the scattered wave vector is k_f = q + K z_hat with |k_f| = K and |q| = 2 K sin(2theta / 2)
for every pixel. Sample frame at rocking angle th, th' = 90 deg - th::

    q_z' = cos th' q_z - sin th' q_x,   q_x' = sin th' q_z + cos th' q_x,   q_y' = q_y

i.e. q' = M(th) q with M the rotation [[cos th', 0, sin th'], [0, 1, 0], [-sin th', 0, cos th']]
acting on (x, y, z). At the nominal Bragg condition (gamma_0 = 0, th = 2theta_0 / 2, centre
pixel) q' = (0, 0, -|Q|) with |Q| = 2 K sin(2theta_0 / 2). Every vector returned here is
ordered (q_x', q_y', q_z') along axis 0, in 1/A.

2theta and gamma are linear in the pixel index. In xrayutilities' terms (checked pixel by
pixel in the tests): beam along +z, sample rocking about +y by th - 90 deg, detector arm
turned by alpha about +y, then by gamma about -x (``QConversion(["y+"], ["y+", "x-"],
[0, 0, 1])``); each pixel's q' is the `QConversion.point` of arm (alpha, gamma) to ~1e-15 1/A.
A flat detector on that arm, normal to k_f at the centre pixel (rows along -y, columns along
+x; `QConversion.area`), agrees exactly at the centre pixel and departs, with
u = (x - x_c) p / D and v = (y_c - y) p / D, alpha_0 the arm angle of the centre pixel, by

    |q - q_flat| <~ K |u (sin 2theta_0 / sin alpha_0 - 1) - v sin gamma_0 cot alpha_0|
                    + K (u^2 + v^2) / (2 tan alpha_0):

second order for gamma_0 = 0 (2.9e-3 1/A at the corners of a 256 x 256, 55 um detector at
0.5 m for (003) at 12 keV), first order otherwise (the linear gamma axis is sheared against
the flat detector's rows by sin gamma_0 cot alpha_0: 1.45e-2 1/A at those corners for
gamma_0 = 1.5 deg, 2.8e-2 for -3 deg).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from nanostrain.analysis import units


@dataclass(frozen=True)
class SxdmGeometry:
    """Nanoprobe diffraction geometry.

    energy_eV: photon energy (eV); distance_m: sample-detector distance D (m);
    pixel_m: detector pixel size p (m); center_px: (row y_c, column x_c) of the pixel at
    (2theta_0, gamma_0), fractional pixels allowed; two_theta_deg: scattering angle
    2theta_0 of that pixel (deg); gamma_deg: its out-of-plane angle gamma_0 (deg).

    A run records it as ``sxdm_geometry`` (`to_metadata`); an analysis rebuilds it with
    `from_metadata`.
    """

    energy_eV: float
    distance_m: float
    pixel_m: float
    center_px: tuple[float, float]
    two_theta_deg: float
    gamma_deg: float = 0.0

    def __post_init__(self) -> None:
        for name in ("energy_eV", "distance_m", "pixel_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SxdmGeometry.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.two_theta_deg < 180.0:
            raise ValueError(f"two_theta_deg must be in (0, 180), got {self.two_theta_deg}")
        if len(self.center_px) != 2:
            raise ValueError(f"center_px must be (row, col), got {self.center_px}")
        # A tuple of floats keeps the dataclass hashable (the detector Q cache keys on it).
        object.__setattr__(self, "center_px", tuple(float(v) for v in self.center_px))

    def to_metadata(self) -> dict[str, Any]:
        """The JSON-able record of this geometry (the start document's ``sxdm_geometry``):
        its fields by name, ``center_px`` as a [row, col] list."""
        return {**asdict(self), "center_px": list(self.center_px)}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> SxdmGeometry:
        """The geometry a run recorded (inverse of `to_metadata`; also takes a beamline
        TOML table of the same keys). Raises ValueError naming missing or unknown keys."""
        names = {field.name for field in fields(cls)}
        required = {field.name for field in fields(cls) if field.default is MISSING}
        unknown, missing = sorted(set(metadata) - names), sorted(required - set(metadata))
        if unknown or missing:
            raise ValueError(
                f"sxdm_geometry must hold {sorted(names)} (energy in eV); missing {missing}, unknown {unknown}"
            )
        return cls(**{**metadata, "center_px": tuple(metadata["center_px"])})

    @property
    def wavelength_A(self) -> float:
        """lambda = hc / E, angstrom (`analysis.units.wavelength_A`)."""
        return float(units.wavelength_A(self.energy_eV))

    @property
    def k_invA(self) -> float:
        """K = 2 pi / lambda, 1/angstrom."""
        return float(units.wavenumber_invA(self.energy_eV))

    @property
    def pixel_rad(self) -> float:
        """Angle subtended by one pixel, p / D (radians)."""
        return self.pixel_m / self.distance_m


def bragg_angle(d_A: ArrayLike, energy_eV: float) -> NDArray[np.float64]:
    """Bragg angle theta_B = arcsin(lambda / (2 d)) in degrees; d in A, photon energy in eV
    (lambda = hc / E, `analysis.units`)."""
    wavelength = units.wavelength_A(energy_eV)
    if np.any(wavelength / (2.0 * np.asarray(d_A, dtype=np.float64)) > 1.0):
        raise ValueError(f"lambda / 2d > 1: no Bragg reflection of d={d_A} A at {energy_eV} eV")
    return units.d_to_two_theta(d_A, float(wavelength)) / 2.0


def bragg_angle_003(c_A: ArrayLike, energy_eV: float) -> NDArray[np.float64]:
    """Bragg angle (deg) of the (003) reflection of a hexagonal (R-3m) cell of axis c (A).

    1/d^2 = 4(h^2+hk+k^2)/(3a^2) + l^2/c^2 gives d_003 = c / 3; theta_B = arcsin(lambda / (2 d_003)).
    """
    return bragg_angle(np.asarray(c_A, dtype=np.float64) / 3.0, energy_eV)


def q_from_d_tilts(d_A: ArrayLike, theta_xy_deg: ArrayLike, theta_xz_deg: ArrayLike) -> NDArray[np.float64]:
    """Sample-frame Q (3, ...) of a lattice spacing and two lattice rotations.

    Inverse of `d_tilts_from_q`: with |Q| = 2 pi / d,
    Q = |Q| (-cos theta_xy sin theta_xz, sin theta_xy, -cos theta_xy cos theta_xz);
    (0, 0) tilt is the nominal direction (0, 0, -|Q|).
    """
    q_abs = units.d_to_q(d_A)
    txy = np.radians(np.asarray(theta_xy_deg, dtype=np.float64))
    txz = np.radians(np.asarray(theta_xz_deg, dtype=np.float64))
    q_abs, txy, txz = np.broadcast_arrays(q_abs, txy, txz)
    return np.stack(
        [-q_abs * np.cos(txy) * np.sin(txz), q_abs * np.sin(txy), -q_abs * np.cos(txy) * np.cos(txz)]
    )


def d_tilts_from_q(q: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(d in A, theta_xy in deg, theta_xz in deg) of sample-frame Q vectors (3, ...) in 1/A.

    d = 2 pi / |Q|; theta_xy = degrees(arcsin(Q_y / |Q|)); theta_xz = degrees(atan2(-Q_x, -Q_z)).
    """
    q = np.asarray(q, dtype=np.float64)
    q_abs = np.sqrt(np.sum(q * q, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (
            2.0 * np.pi / q_abs,
            np.degrees(np.arcsin(q[1] / q_abs)),
            np.degrees(np.arctan2(-q[0], -q[2])),
        )


def sample_rotation(theta_deg: ArrayLike) -> NDArray[np.float64]:
    """Rotation M(th) (..., 3, 3) with q' = M q (lab -> sample frame), th' = 90 deg - th."""
    th_p = np.radians(90.0 - np.asarray(theta_deg, dtype=np.float64))
    c, s = np.cos(th_p), np.sin(th_p)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack(
        [np.stack([c, zero, s], -1), np.stack([zero, one, zero], -1), np.stack([-s, zero, c], -1)], -2
    )


def lab_q(geometry: SxdmGeometry, row: ArrayLike, col: ArrayLike) -> NDArray[np.float64]:
    """Lab-frame q (3, ...) in 1/A at detector positions (row, col) (fractional pixels allowed).

    Raises ValueError where |gamma| > 2theta: cos 2theta / cos gamma > 1 has no alpha.
    """
    k = geometry.k_invA
    two_theta = (
        np.radians(geometry.two_theta_deg)
        + (np.asarray(col, dtype=np.float64) - geometry.center_px[1]) * geometry.pixel_rad
    )
    gamma = (
        np.radians(geometry.gamma_deg)
        + (geometry.center_px[0] - np.asarray(row, dtype=np.float64)) * geometry.pixel_rad
    )
    two_theta, gamma = np.broadcast_arrays(two_theta, gamma)
    cos_alpha = np.cos(two_theta) / np.cos(gamma)
    if np.any(np.abs(cos_alpha) > 1.0):
        raise ValueError("the detector reaches |gamma| > 2theta, where the SXDM convention has no alpha")
    alpha = np.arccos(cos_alpha)
    return np.stack(
        [k * np.cos(gamma) * np.sin(alpha), k * np.sin(gamma), k * np.cos(gamma) * np.cos(alpha) - k]
    )


@lru_cache(maxsize=8)
def detector_lab_q(geometry: SxdmGeometry, shape: tuple[int, int]) -> NDArray[np.float64]:
    """Lab-frame q (3, rows, cols) of every pixel of a detector frame of `shape`, cached
    per (geometry, shape) and read-only (the accumulator and the renderer share it)."""
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    q = lab_q(geometry, rows, cols)
    q.flags.writeable = False
    return q


def q_vectors(geometry: SxdmGeometry, theta_deg: ArrayLike, shape: tuple[int, int]) -> NDArray[np.float64]:
    """Sample-frame q' (1/A) of every detector pixel at rocking angle(s) theta_deg (deg).

    Returns (3, rows, cols) for a scalar angle, (n_theta, 3, rows, cols) for a 1D array;
    q' = M(th) q_lab with the convention of the module docstring.
    """
    lab = detector_lab_q(geometry, (int(shape[0]), int(shape[1])))
    return np.einsum("...ij,jrc->...irc", sample_rotation(theta_deg), lab)


def pixel_of_kf(
    geometry: SxdmGeometry, k_f: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Detector (row, col) hit by scattered wave vectors k_f (3, ...) with |k_f| = K, q_x >= 0.

    Inverse of `lab_q`: 2theta = arccos(k_fz / K), gamma = arcsin(k_fy / K) (since
    cos gamma cos alpha = cos 2theta), then col = x_c + (2theta - 2theta_0) D / p and
    row = y_c - (gamma - gamma_0) D / p.
    """
    k = geometry.k_invA
    two_theta = np.arccos(np.clip(k_f[2] / k, -1.0, 1.0))
    gamma = np.arcsin(np.clip(k_f[1] / k, -1.0, 1.0))
    col = geometry.center_px[1] + (two_theta - np.radians(geometry.two_theta_deg)) / geometry.pixel_rad
    row = geometry.center_px[0] - (gamma - np.radians(geometry.gamma_deg)) / geometry.pixel_rad
    return row, col


def bragg_peak_position(
    geometry: SxdmGeometry, q_vector: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Rocking angle (deg) and detector (row, col) where a sample-frame Q (3, ...) diffracts.

    The lab vector q = M(th)^T Q must end on the Ewald sphere, |q + K z_hat| = K, i.e.
    q_z = -|Q|^2 / (2K). With Q_x = rho sin(beta), Q_z = rho cos(beta), q_z = rho cos(th' - beta)
    and q_x = rho sin(beta - th'); the detector sees q_x >= 0 (alpha in [0, pi]), which
    selects th' = beta - arccos(-|Q|^2 / (2 K rho)). Then th = 90 deg - th' (wrapped to
    (-180, 180]) and (row, col) follow from `pixel_of_kf`. NaN where no rocking angle
    reaches the Ewald sphere (|Q| > 2K or Q along the rocking axis).
    """
    q = np.asarray(q_vector, dtype=np.float64)
    k = geometry.k_invA
    rho = np.hypot(q[0], q[2])
    with np.errstate(invalid="ignore", divide="ignore"):
        th_p = np.arctan2(q[0], q[2]) - np.arccos(-np.sum(q * q, axis=0) / (2.0 * k * rho))
    theta = np.degrees(np.pi / 2.0 - th_p)
    theta = 180.0 - np.mod(180.0 - theta, 360.0)
    lab = np.einsum("...ji,j...->i...", sample_rotation(theta), q)  # M^T Q
    row, col = pixel_of_kf(geometry, lab + np.array([0.0, 0.0, k]).reshape((3,) + (1,) * (q.ndim - 1)))
    return theta, row, col
