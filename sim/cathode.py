"""Cathode particle physics: spherical Li diffusion driven by a galvanostatic current.

The state that the simulated cycler, XRD detector, nanoprobe and TXM read. Units: r and
R in um at the interface (cm inside the diffusion term), D in cm^2/s, t in s, specific
current i in mA/g (> 0 = charge = delithiation), capacity in mAh/g, potential in V vs
Li/Li+, lattice parameters in angstrom; x is the Li site fraction of Li_xMO2.

* Diffusion in a sphere of radius R (the diffusion length: the single crystal, or one
  primary grain of a polycrystal, all grains taken identical):
      dx/dt = (1/r^2) d/dr (r^2 D(x) dx/dr),          0 < r < R,
      dx/dr = 0 at r = 0,
      -D(x) dx/dr = (R/3) i / (3600 Q)  at r = R     (outward Li flux),
  with Q = f Q_th the specific capacity (f the active fraction left after ageing), so
      d<x>/dt = -i / (3600 Q)          (<x> the volume mean; exact, see `step`).
* Discretisation: n equal-thickness shells (finite volumes). The face diffusivity is
  the mean of D(x) over the x interval between the two neighbours (Kirchhoff transform,
  exact for a steady flux), which keeps a reaction front through the D minimum free of
  grid artefacts (no potential spikes as the outer shell crosses it). Backward Euler
  in time with D frozen at the start of each sub-step (one tridiagonal LAPACK solve):
  unconditionally stable and conservative to round-off. `step` sub-divides dt so that
  <x> changes by at most `MAX_DX_PER_SUBSTEP` per sub-step (capacities and the c
  splitting move by < 0.5 mAh/g and < 0.005 A when n and the sub-step are refined 4x).
  Cost: ~30-60 us per sub-step, i.e. ~0.1 s for a 20 mA/g charge in 0.25 mAh/g steps.
* Cell potential: E = U(x_s) + eta_ct + i R_ohm with
      x_s     = surface Li fraction, carried from the outer shell with the flux BC,
      j       = i rho R / 3                       (current density on the particle
                                                   surface, A/cm^2, i in A/g, rho g/cm^3),
      j0      = 2 j0_ref sqrt(x_s (1 - x_s)),
      eta_ct  = (2 R_g T / F) asinh(j / (2 j0))    (symmetric Butler-Volmer),
      R_ohm   = specific ohmic resistance of the electrode, ohm g (V per A/g).
  Charging stops on the 4.5 V limit once U(x_s) gets there, so slow diffusion (a steep
  surface gradient) costs capacity at high rate.
* Lattice: each shell carries a(x), c(x) of `LatticeCurve`, weighted by its volume.

What emerges (no per-material switch anywhere): where D(x) has its minimum, at the
H2 -> H3 transition, the flux can only cross a steep Li gradient. With NM91's deep
minimum and a 2 um diffusion length this gradient becomes a reaction front: an H3 shell
grows over an H2 core, and because c(x) collapses steeply across the front the (00l)
reflections split into two populations (`c_populations`), more so at higher current.
NC91's shallow minimum, or a 0.25 um primary grain, keeps the gradient below the width
of the c collapse, so c stays one population.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from math import asinh, ceil, sqrt

import numpy as np
from scipy.linalg.lapack import dgtsv

from nanostrain.sim.materials import (
    FADE_RATES,
    FARADAY_C_MOL,
    GAS_CONSTANT_J_MOL_K,
    NC91,
    NM91,
    PC,
    SC,
    Array,
    CathodeMaterial,
    FadeRates,
    Morphology,
    material,
    morphology,
)

__all__ = [
    "NC91",
    "NM91",
    "PC",
    "SC",
    "CathodeMaterial",
    "CathodeParticle",
    "CPopulations",
    "Crack",
    "CyclePoint",
    "FadeRates",
    "GalvanostaticResult",
    "LatticeState",
    "Morphology",
    "ShellState",
    "SurfaceLayer",
    "c_populations",
    "charged_particle",
    "galvanostatic_cycle",
    "material",
    "morphology",
    "radial_field_to_grid",
    "simulate_galvanostatic",
]

MAX_DX_PER_SUBSTEP = 0.002
"""Largest change of the mean Li fraction per implicit sub-step (accuracy, not stability)."""

X_EVAL_MARGIN = 1e-6
"""x_s is kept in [margin, 1 - margin] for the exchange current (j0 -> 0 at the ends)."""

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class ShellState:
    """Radial state: shell-centre radius (um), volume fraction (sums to 1), Li fraction."""

    radius_um: Array
    volume_fraction: Array
    x: Array


@dataclass(frozen=True)
class LatticeState:
    """Per-shell lattice parameters (angstrom) and volume weights (sum to 1)."""

    a_A: Array
    c_A: Array
    weight: Array

    @property
    def cell_volume_A3(self) -> Array:
        """Hexagonal cell volume per shell, V = (sqrt(3)/2) a^2 c, angstrom^3."""
        return 0.5 * np.sqrt(3.0) * self.a_A**2 * self.c_A

    @property
    def mean_a_A(self) -> float:
        """Volume-weighted mean a, angstrom."""
        return float(np.dot(self.weight, self.a_A))

    @property
    def mean_c_A(self) -> float:
        """Volume-weighted mean c, angstrom (the centroid of the (00l) reflections)."""
        return float(np.dot(self.weight, self.c_A))

    @property
    def mean_cell_volume_A3(self) -> float:
        """Volume-weighted mean cell volume, angstrom^3."""
        return float(np.dot(self.weight, self.cell_volume_A3))


def _as_material(value: CathodeMaterial | str) -> CathodeMaterial:
    return material(value) if isinstance(value, str) else value


def _as_morphology(value: Morphology | str) -> Morphology:
    return morphology(value) if isinstance(value, str) else value


class CathodeParticle:
    """One cathode particle (or one representative primary grain of a polycrystal).

    Parameters
    ----------
    material: `CathodeMaterial` or its name ("NC91", "NM91").
    morphology: "SC", "PC" or a `Morphology`; sets the default diffusion radius.
    radius_um: diffusion radius R in um (default: the morphology's).
    n_shells: number of equal-thickness radial shells.
    temperature_K: temperature (diffusivity Arrhenius factor, Butler-Volmer).
    x_initial: uniform initial Li fraction (1 = pristine).
    ohmic_resistance_ohm_g: specific ohmic resistance R_ohm of the electrode, ohm g.
    fade: per-cycle degradation used by `age` (default: the calibrated `FADE_RATES`
        entry; None for a material/morphology without one, and then `age` refuses).
    """

    def __init__(
        self,
        material: CathodeMaterial | str,
        morphology: Morphology | str = "SC",
        radius_um: float | None = None,
        n_shells: int = 50,
        temperature_K: float = 298.15,
        *,
        x_initial: float = 1.0,
        ohmic_resistance_ohm_g: float = 0.15,
        fade: FadeRates | None = None,
    ) -> None:
        self.material = _as_material(material)
        self.morphology = _as_morphology(morphology)
        self.radius_um = float(
            self.morphology.diffusion_radius_um if radius_um is None else radius_um
        )
        if self.radius_um <= 0.0:
            raise ValueError(f"radius_um must be positive, got {radius_um}")
        if n_shells < 3:
            raise ValueError(f"n_shells must be at least 3, got {n_shells}")
        if temperature_K <= 0.0:
            raise ValueError(f"temperature_K must be positive, got {temperature_K}")
        if not 0.0 <= x_initial <= 1.0:
            raise ValueError(f"x_initial must be in [0, 1], got {x_initial}")
        self.temperature_K = float(temperature_K)
        self.ohmic_resistance_ohm_g = float(ohmic_resistance_ohm_g)
        self.fade = fade or FADE_RATES.get((self.material.name, self.morphology.name))
        self._active_fraction = 1.0
        self._diffusivity_factor = 1.0
        self._cycles_aged = 0

        # Geometry in units of R: edges rho_0 = 0 .. rho_n = 1.
        edges = np.linspace(0.0, 1.0, n_shells + 1)
        self._centres = 0.5 * (edges[:-1] + edges[1:])
        self._volume = (edges[1:] ** 3 - edges[:-1] ** 3) / 3.0  # per steradian
        self._area_over_gap = edges[1:-1] ** 2 / np.diff(self._centres)  # rho_k^2 / h_k
        self._outer_gap = 1.0 - self._centres[-1]
        # D(x, T) g / R^2 = D(x, 298.15 K) * _d_scale in 1/s (R in cm, g: ageing).
        self._d_scale = self.material.diffusivity.arrhenius_factor(self.temperature_K) / (
            self.radius_um * 1e-4
        ) ** 2
        self._x = np.full(n_shells, float(x_initial))
        self._current_mA_g = 0.0
        self._charge_mAh_g = 0.0
        self._update_terminal()

    # --- dynamics -------------------------------------------------------------------

    @property
    def active_fraction(self) -> float:
        """f: fraction of the active mass still cycling (1 when fresh, see `age`)."""
        return self._active_fraction

    @property
    def diffusivity_factor(self) -> float:
        """g: D of the aged particle over D of the fresh one (see `age`)."""
        return self._diffusivity_factor

    @property
    def cycles_aged(self) -> int:
        """Cycles of fade applied by `age`."""
        return self._cycles_aged

    @property
    def specific_capacity_mAh_g(self) -> float:
        """Q = f Q_th: capacity of x: 1 -> 0 per gram of (original) active mass, mAh/g."""
        return self._active_fraction * self.material.theoretical_capacity_mAh_g

    def _rate_per_s(self, current_mA_g: float) -> float:
        """-d<x>/dt = i / (3600 Q), 1/s."""
        return current_mA_g / (SECONDS_PER_HOUR * self.specific_capacity_mAh_g)


    def step(self, current_mA_g: float, dt_s: float) -> None:
        """Advance by dt_s seconds at constant specific current (mA/g; > 0 = charge).

        Each sub-step solves, for shell volumes V_i and face conductances
        G_k = rho_k^2 <D>_k g / (R^2 h_k) (face k between shells k-1 and k, <D>_k the
        `DiffusivityCurve.mean_between` of their x, g the Arrhenius and ageing factor),
            V_i (x_i' - x_i) = dt [G_i (x_(i-1)' - x_i') + G_(i+1) (x_(i+1)' - x_i')]
                               - dt delta_(i, n-1) rate / 3,
        rate = i / (3600 Q); summing over shells gives sum V_i x_i' = sum V_i x_i -
        dt rate / 3, i.e. <x> drops by exactly rate dt.
        """
        if dt_s < 0.0:
            raise ValueError(f"dt_s must be >= 0, got {dt_s}")
        rate = self._rate_per_s(current_mA_g)
        x_mean_after = self.x_mean - rate * dt_s
        if not -1e-9 <= x_mean_after <= 1.0 + 1e-9:
            raise ValueError(
                f"{current_mA_g} mA/g for {dt_s} s would take the mean Li fraction to "
                f"{x_mean_after:.4f}, outside [0, 1]"
            )
        self._current_mA_g = float(current_mA_g)
        if dt_s > 0.0:
            self._integrate(rate, dt_s)
            self._charge_mAh_g += current_mA_g * dt_s / SECONDS_PER_HOUR
        self._update_terminal()

    def _integrate(self, rate: float, dt_s: float) -> None:
        """Backward-Euler sub-steps of `step` at -d<x>/dt = rate (1/s)."""
        n_sub = max(1, ceil(abs(rate) * dt_s / MAX_DX_PER_SUBSTEP))
        h = dt_s / n_sub
        for _ in range(n_sub):
            x = self._x
            mean_d = self.material.diffusivity.mean_between(x[:-1], x[1:])
            g = self._area_over_gap * mean_d * (self._d_scale * h)
            diagonal = self._volume.copy()
            diagonal[1:] += g
            diagonal[:-1] += g
            rhs = self._volume * x
            rhs[-1] -= h * rate / 3.0
            inventory = rhs.sum()
            x_new = dgtsv(-g, diagonal, -g, rhs, overwrite_d=1, overwrite_b=1)[3]
            # Exact in exact arithmetic; remove the round-off of an ill-conditioned
            # (huge h) solve so that the inventory stays exact.
            x_new += (inventory - self._volume @ x_new) * 3.0  # sum of V_i = 1/3
            self._x = x_new

    def _update_terminal(self) -> None:
        """Evaluate x_s, U(x_s) and eta for the current of the last `step`.

        x_s: the outer shell value carried to r = R by the flux boundary condition over
        the last half shell, Phi(x_s) = Phi(x_(n-1)) - rate (1 - rho_(n-1)) R^2 / (3 g),
        with Phi the Kirchhoff transform of D (`DiffusivityCurve.kirchhoff`, T factor
        included in g), clipped to [0, 1].
        eta = (2 R_g T / F) asinh(j / (2 j0)) + i R_ohm, see the module docstring.
        """
        diffusivity = self.material.diffusivity
        drop = self._rate_per_s(self._current_mA_g) * self._outer_gap / (3.0 * self._d_scale)
        x_s = float(diffusivity.kirchhoff_inverse(diffusivity.kirchhoff(self._x[-1]) - drop))
        x_s = min(max(x_s, 0.0), 1.0)
        self._x_surface = x_s
        self._ocv_V = float(self.material.ocv(x_s))
        current_A_g = self._current_mA_g * 1e-3
        x_s = min(max(x_s, X_EVAL_MARGIN), 1.0 - X_EVAL_MARGIN)
        j = current_A_g * self.material.density_g_cm3 * self.radius_um * 1e-4 / 3.0
        j0 = 2.0 * self.material.exchange_current_A_cm2 * sqrt(x_s * (1.0 - x_s))
        thermal = 2.0 * GAS_CONSTANT_J_MOL_K * self.temperature_K / FARADAY_C_MOL
        self._overpotential_V = thermal * asinh(j / (2.0 * j0)) + (
            current_A_g * self.ohmic_resistance_ohm_g
        )

    def relax(self, dt_s: float) -> None:
        """Rest at open circuit for dt_s seconds."""
        self.step(0.0, dt_s)

    def age(self, cycles: int) -> None:
        """Apply `cycles` cycles of the phenomenological fade (see `FadeRates`).

        f -> f (1 - a)^n, D -> D (1 - d)^n. The Li state of the shells is kept.
        """
        if cycles < 0:
            raise ValueError(f"cycles must be >= 0, got {cycles}")
        if self.fade is None:
            raise ValueError(
                f"no calibrated fade for {self.material.name}-{self.morphology.name}; "
                "pass fade=FadeRates(...) to CathodeParticle"
            )
        active = (1.0 - self.fade.active_loss_per_cycle) ** cycles
        diffusivity = (1.0 - self.fade.diffusivity_loss_per_cycle) ** cycles
        self._active_fraction *= active
        self._diffusivity_factor *= diffusivity
        self._d_scale *= diffusivity
        self._cycles_aged += cycles
        self._update_terminal()

    # --- observables ----------------------------------------------------------------

    @property
    def x_mean(self) -> float:
        """Volume-mean Li fraction <x>."""
        return float(3.0 * np.dot(self._volume, self._x))

    @property
    def x_surface(self) -> float:
        """Li fraction at the particle surface r = R (see `_update_terminal`)."""
        return self._x_surface

    @property
    def current_mA_g(self) -> float:
        """Specific current of the last `step` (0 after `relax`), mA/g."""
        return self._current_mA_g

    @property
    def capacity_mAh_g(self) -> float:
        """Charge passed since construction, mAh/g (charge positive, discharge negative)."""
        return self._charge_mAh_g

    @property
    def overpotential_V(self) -> float:
        """eta_ct + i R_ohm in V (signed like the current), see the module docstring."""
        return self._overpotential_V

    @property
    def open_circuit_potential_V(self) -> float:
        """U(x_s) in V vs Li/Li+."""
        return self._ocv_V

    @property
    def potential_V(self) -> float:
        """Cell potential E = U(x_s) + eta in V vs Li/Li+."""
        return self.open_circuit_potential_V + self.overpotential_V

    @property
    def shells(self) -> ShellState:
        """Shell-centre radii (um), volume fractions and Li fractions (copies)."""
        return ShellState(
            radius_um=self._centres * self.radius_um,
            volume_fraction=3.0 * self._volume,
            x=self._x.copy(),
        )

    def lattice(self) -> LatticeState:
        """Per-shell a, c (angstrom) with volume weights: render each shell's reflections."""
        x = self._x
        return LatticeState(
            a_A=self.material.lattice.a(x),
            c_A=self.material.lattice.c(x),
            weight=3.0 * self._volume,
        )

    def microstrain(self, coherence_um: float = 0.1) -> Array:
        """Per-shell microstrain from the radial lattice gradient (dimensionless).

        eps_i = (L / 2) max(|d ln a/dr|, |d ln c/dr|) at shell i: half the relative
        d-spacing spread across a coherently diffracting domain of length L
        (coherence_um), i.e. the Williamson-Hall eps of a linear gradient. Gradients by
        central differences on shell centres (one-sided at the ends).
        """
        lattice = self.lattice()
        r = self._centres * self.radius_um
        grad_a = np.abs(np.gradient(np.log(lattice.a_A), r))
        grad_c = np.abs(np.gradient(np.log(lattice.c_A), r))
        return 0.5 * coherence_um * np.maximum(grad_a, grad_c)

    def ni_valence(self) -> Array:
        """Per-shell mean Ni oxidation state, see `CathodeMaterial.ni_valence`."""
        return self.material.ni_valence(self._x)

    def radial_field_to_grid(
        self,
        values_per_shell: Array,
        shape: tuple[int, ...],
        voxel_um: float,
        *,
        centre_um: tuple[float, ...] | None = None,
        outside: float = np.nan,
        surface_layer: SurfaceLayer | None = None,
        crack: Crack | None = None,
    ) -> Array:
        """`radial_field_to_grid` with this particle's radius (um)."""
        return radial_field_to_grid(
            values_per_shell,
            shape,
            voxel_um,
            self.radius_um,
            centre_um=centre_um,
            outside=outside,
            surface_layer=surface_layer,
            crack=crack,
        )


def charged_particle(
    material: CathodeMaterial | str,
    current_mA_g: float = 200.0,
    stop_V: float = 4.3,
    morphology: Morphology | str = "SC",
    cycles: int = 0,
) -> CathodeParticle:
    """A particle aged ``cycles`` cycles (`CathodeParticle.age`), then charged
    galvanostatically at ``current_mA_g`` (mA/g, 0.25 mAh/g steps) until the cell reaches
    ``stop_V`` (V vs Li/Li+), and left there (no relaxation).

    At 4.3 V (the H2-H3 region) a single-crystal NM91 holds a reaction front, an H3 shell
    over an H2 core (at 200 mA/g Ni valence 3.64-3.76 across the particle), while NC91
    stays uniform (spread < 0.01); a fully charged 4.5 V particle no longer shows it.
    """
    particle = CathodeParticle(material, morphology)
    if cycles:
        particle.age(cycles)
    dt_s = 0.25 * 3600.0 / current_mA_g  # 0.25 mAh/g per step
    while particle.potential_V < stop_V:
        particle.step(current_mA_g, dt_s)
    return particle


# --- 3D fields ----------------------------------------------------------------------


@dataclass(frozen=True)
class SurfaceLayer:
    """A shell of thickness_um at the particle surface holding a fixed value."""

    thickness_um: float
    value: float


@dataclass(frozen=True)
class Crack:
    """A planar crack: points with |n . (p - p0) - offset_um| < width_um / 2 are empty.

    normal: plane normal (z, y, x) for 3D grids, (y, x) for 2D (normalised here);
    p0 is the particle centre.
    """

    normal: tuple[float, ...]
    width_um: float
    offset_um: float = 0.0


def radial_field_to_grid(
    values_per_shell: Array,
    shape: tuple[int, ...],
    voxel_um: float,
    radius_um: float,
    *,
    centre_um: tuple[float, ...] | None = None,
    outside: float = np.nan,
    surface_layer: SurfaceLayer | None = None,
    crack: Crack | None = None,
) -> Array:
    """Map a radial profile onto a 2D (central cross-section) or 3D voxel grid.

    Shells are equal-thickness, their centres at r_i = (i + 1/2) R / n; a voxel at
    distance r from the centre gets the profile linearly interpolated at r (clamped to
    the first/last shell inside the sphere) and `outside` for r > R. Voxel centres sit
    at (index + 1/2) voxel_um; the particle centre defaults to the grid centre. Axes
    are (z, y, x) or (y, x).
    """
    values = np.asarray(values_per_shell, dtype=float)
    if values.ndim != 1 or values.size < 1:
        raise ValueError("values_per_shell must be a non-empty 1D array")
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must have 2 or 3 axes, got {shape}")
    if voxel_um <= 0.0 or radius_um <= 0.0:
        raise ValueError("voxel_um and radius_um must be positive")
    centre = (
        tuple(0.5 * n * voxel_um for n in shape) if centre_um is None else tuple(centre_um)
    )
    if len(centre) != len(shape):
        raise ValueError("centre_um must have one coordinate per grid axis")
    axes = [(np.arange(n) + 0.5) * voxel_um - c for n, c in zip(shape, centre, strict=True)]
    offsets = np.meshgrid(*axes, indexing="ij", sparse=True)
    r = np.sqrt(sum(o**2 for o in offsets))
    shell_r = (np.arange(values.size) + 0.5) * radius_um / values.size
    grid = np.interp(r, shell_r, values)
    if surface_layer is not None:
        grid[r > radius_um - surface_layer.thickness_um] = surface_layer.value
    grid[r > radius_um] = outside
    if crack is not None:
        normal = np.asarray(crack.normal, dtype=float)
        if normal.size != len(shape) or not np.any(normal):
            raise ValueError("crack.normal must be a non-zero vector with one entry per axis")
        normal = normal / np.linalg.norm(normal)
        distance = sum(n * o for n, o in zip(normal, offsets, strict=True)) - crack.offset_um
        grid[np.broadcast_to(np.abs(distance) < 0.5 * crack.width_um, grid.shape)] = outside
    return grid


# --- c populations (what the (00l) reflections would show) -------------------------


@dataclass(frozen=True)
class CPopulations:
    """Modes of the volume-weighted c distribution seen at a given resolution.

    c_A: mode positions (angstrom), highest c first; fraction: volume in each mode's
    basin (split at the density minima); dip_ratio: density minimum between the two
    largest modes over the smaller of their peak densities (1 if unimodal).
    """

    c_A: tuple[float, ...]
    fraction: tuple[float, ...]
    dip_ratio: float

    def is_bimodal(self, min_fraction: float = 0.1, max_dip_ratio: float = 0.5) -> bool:
        """Two modes each holding >= min_fraction, separated by a clear density dip."""
        major = [f for f in self.fraction if f >= min_fraction]
        return len(major) >= 2 and self.dip_ratio <= max_dip_ratio

    @property
    def splitting_A(self) -> float:
        """|c_1 - c_2| of the two most populated modes, angstrom (0 if unimodal)."""
        if len(self.c_A) < 2:
            return 0.0
        order = np.argsort(self.fraction)[::-1][:2]
        return float(abs(self.c_A[order[0]] - self.c_A[order[1]]))


def c_populations(lattice: LatticeState, resolution_A: float = 0.03) -> CPopulations:
    """Split the per-shell c values into populations as an (00l) reflection would.

    density(c) = sum_i w_i exp(-(c - c_i)^2 / (2 s^2)), s = resolution_A (about the
    instrumental resolution of c from (003) at 17-BM); modes are its local maxima with
    at least 2 % of the volume in their basin; minor modes are dropped.
    """
    c, w = lattice.c_A, lattice.weight
    grid = np.arange(c.min() - 4 * resolution_A, c.max() + 4 * resolution_A, resolution_A / 8)
    density = np.exp(-0.5 * ((grid[:, None] - c[None, :]) / resolution_A) ** 2) @ w
    inner = density[1:-1]
    peaks = np.flatnonzero((inner > density[:-2]) & (inner >= density[2:])) + 1
    troughs = [p + int(np.argmin(density[p:q])) for p, q in zip(peaks[:-1], peaks[1:])]
    bounds = np.array([0, *troughs, grid.size], dtype=int)
    mass = np.array([density[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])])
    mass /= mass.sum()
    keep = mass >= 0.02
    peaks, mass = peaks[keep], mass[keep] / mass[keep].sum()
    order = np.argsort(grid[peaks])[::-1]
    peaks, mass = peaks[order], mass[order]
    dip_ratio = 1.0
    if peaks.size >= 2:
        top2 = np.sort(peaks[np.argsort(mass)[::-1][:2]])
        dip = density[top2[0] : top2[1] + 1].min()
        dip_ratio = float(dip / density[top2].min())
    return CPopulations(
        c_A=tuple(float(v) for v in grid[peaks]),
        fraction=tuple(float(m) for m in mass),
        dip_ratio=dip_ratio,
    )


# --- galvanostatic cycling ----------------------------------------------------------


@dataclass(frozen=True)
class CyclePoint:
    """One recorded point of `galvanostatic_cycle`.

    time_s since the start, potential_V, x_mean = <x>, capacity_mAh_g = charge passed
    (signed), segment = +1 on charge, -1 on discharge.
    """

    time_s: float
    potential_V: float
    x_mean: float
    capacity_mAh_g: float
    segment: int


@dataclass(frozen=True)
class GalvanostaticResult:
    """Time series of one charge-discharge cycle (arrays of equal length, see `CyclePoint`)."""

    time_s: Array
    potential_V: Array
    x_mean: Array
    capacity_mAh_g: Array
    segment: Array

    @property
    def charge_capacity_mAh_g(self) -> float:
        """Charge passed during the charge segment, mAh/g."""
        on_charge = self.capacity_mAh_g[self.segment > 0]
        return float(on_charge.max() - self.capacity_mAh_g[0])

    @property
    def discharge_capacity_mAh_g(self) -> float:
        """Charge returned during the discharge segment, mAh/g."""
        return float(self.capacity_mAh_g.max() - self.capacity_mAh_g[-1])


def galvanostatic_cycle(
    particle: CathodeParticle,
    current_mA_g: float,
    v_min: float = 2.7,
    v_max: float = 4.5,
    dt_s: float | None = None,
    record_every_s: float | None = None,
) -> Iterator[CyclePoint]:
    """Charge at +|i| to v_max, then discharge at -|i| to v_min; yield recorded points.

    The particle is stepped in place, so a consumer may read any of its observables
    (`lattice()`, `shells`, ...) at each yielded point. dt_s defaults to the time for
    0.25 mAh/g; points are recorded every record_every_s (default: every step) and at
    the start and both cut-offs.
    """
    if current_mA_g == 0.0:
        raise ValueError("current_mA_g must be non-zero")
    if not v_min < v_max:
        raise ValueError(f"need v_min < v_max, got {v_min}, {v_max}")
    magnitude = abs(current_mA_g)
    dt = dt_s if dt_s is not None else 0.25 * SECONDS_PER_HOUR / magnitude
    record = record_every_s if record_every_s is not None else dt
    if dt <= 0.0 or record <= 0.0:
        raise ValueError("dt_s and record_every_s must be positive")
    # A segment cannot pass more than the whole capacity (10 % margin for the last step).
    max_steps = ceil(1.1 * particle.specific_capacity_mAh_g * SECONDS_PER_HOUR / magnitude / dt)
    time = 0.0

    def point(segment: int) -> CyclePoint:
        return CyclePoint(
            time, particle.potential_V, particle.x_mean, particle.capacity_mAh_g, segment
        )

    particle.step(magnitude, 0.0)
    yield point(+1)
    for segment, current in ((+1, magnitude), (-1, -magnitude)):
        next_record = time + record
        for _ in range(max_steps):
            particle.step(current, dt)
            time += dt
            potential = particle.potential_V
            done = potential >= v_max if segment > 0 else potential <= v_min
            if done or time >= next_record - 1e-9:
                yield point(segment)
                next_record = time + record
            if done:
                break
        else:
            raise RuntimeError(f"segment {segment:+d} did not reach its cut-off")


def simulate_galvanostatic(
    particle: CathodeParticle,
    current_mA_g: float,
    v_min: float = 2.7,
    v_max: float = 4.5,
    dt_s: float | None = None,
    record_every_s: float | None = None,
) -> GalvanostaticResult:
    """Run `galvanostatic_cycle` to the end and return its time series."""
    points = list(galvanostatic_cycle(particle, current_mA_g, v_min, v_max, dt_s, record_every_s))
    return GalvanostaticResult(
        time_s=np.array([p.time_s for p in points]),
        potential_V=np.array([p.potential_V for p in points]),
        x_mean=np.array([p.x_mean for p in points]),
        capacity_mAh_g=np.array([p.capacity_mAh_g for p in points]),
        segment=np.array([p.segment for p in points], dtype=int),
    )
