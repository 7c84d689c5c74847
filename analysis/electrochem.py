"""Electrochemistry: GITT diffusion, four-point-probe conductivity, capacities, dQ/dV.

Conventions: time in s, potential in V vs Li/Li+, current in A with charge (oxidation of
the cathode, delithiation) positive, mass of active material in g, capacity in mAh/g,
lengths in cm (as the diffusion coefficient in cm^2/s and conductivity in S/cm are
quoted). A cycler logs the current it holds until the next sample, so the charge passed
between samples k and k+1 is I_k (t_{k+1} - t_k).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import OptimizeWarning, brentq, curve_fit

ArrayLike = npt.ArrayLike

_AS_PER_MAH = 3.6  # 1 mAh = 3.6 A s

#: Columns of the table ``gitt_diffusion`` returns (a numpy structured array).
GITT_DTYPE = np.dtype(
    [
        ("pulse", np.int64),  # index of the titration
        ("start_s", float),  # time the current was switched on
        ("tau_s", float),  # pulse duration
        ("current_A", float),  # mean current during the pulse
        ("charge_mAh", float),  # cumulative charge passed by the end of the pulse
        ("soc", float),  # fraction of the titration's total |charge| passed by then
        ("E_before_V", float),  # relaxed potential at the end of the rest before
        ("E_after_V", float),  # relaxed potential at the end of the rest after
        ("dEs_V", float),  # E_after - E_before
        ("dE_dsqrt_t", float),  # V / s^0.5, slope in the sqrt(t) window
        ("D", float),  # chemical diffusion coefficient, eq. (2), cm^2/s
        ("relaxation_rate_per_s", float),  # k of the rest's slowest exponential, 1/s
        ("D_relaxation", float),  # k r_p^2 / a_1^2, cm^2/s
    ]
)

#: a_1, a_2: the first two positive roots of tan(a) = a; mode n of diffusion in a sphere
#: with a closed surface decays as exp(-a_n^2 D t / r_p^2) (Crank, The Mathematics of
#: Diffusion, 6.3).
SPHERE_SLOWEST_ROOT, SPHERE_SECOND_ROOT = (
    float(brentq(lambda a: math.tan(a) - a, n * math.pi + 1e-9, (n + 0.5) * math.pi - 1e-9)) for n in (1, 2)
)

#: The rest's tail is fitted from where the potential is within this fraction of its
#: initial distance to the relaxed value (modes 3 and up, a_n^2 >= 5.9 a_1^2, are gone).
RELAXATION_TAIL_FRACTION = 0.3


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs (stop exclusive) of the runs of True in flags."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    change = np.flatnonzero(np.diff(padded))
    return list(zip(change[::2].tolist(), change[1::2].tolist()))


def _interval_charge(time_s: np.ndarray, current_A: np.ndarray) -> np.ndarray:
    """Charge (A s) passed in each sample interval, I_k (t_{k+1} - t_k), one per sample
    (zero for the last)."""
    return current_A * np.append(np.diff(time_s), 0.0)


def _check_record(time_s: ArrayLike, *columns: ArrayLike) -> list[np.ndarray]:
    arrays = [np.asarray(time_s, dtype=float)] + [np.asarray(c, dtype=float) for c in columns]
    if arrays[0].ndim != 1 or any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"record columns must be 1D of one length, got {[a.shape for a in arrays]}")
    if np.any(np.diff(arrays[0]) <= 0):
        raise ValueError("time_s must increase strictly")
    return arrays


def gitt_diffusion(
    time_s: ArrayLike,
    potential_V: ArrayLike,
    current_A: ArrayLike,
    radius_cm: float,
    sqrt_t_window: tuple[float, float] = (10.0, 20.0),
    current_threshold_A: float | None = None,
    rest_average_s: float = 60.0,
) -> np.ndarray:
    """Chemical diffusion coefficient per titration of a GITT record (SCIENCE.md eq. 2).

    D = 4 / (9 pi) * (r_p / tau * dEs / (dE / d sqrt(t)))^2        [cm^2/s]

    Weppner-Huggins short-time solution for spherical particles of radius r_p (cm):
    tau (s) is the pulse duration; dEs (V) the change of the relaxed potential over the
    titration, the potential at the end of the rest after the pulse minus that at the
    end of the rest before it (each the mean over the last ``rest_average_s`` seconds of
    the rest, against noise); dE/d sqrt(t) (V/s^0.5) the slope of the potential against
    sqrt(t - t_start) during the pulse, fitted by least squares where
    sqrt_t_window[0] <= sqrt(t - t_start) <= sqrt_t_window[1] (s^0.5).

    Eq. (2) assumes sqrt(D t) << r_p over the window. When r_p^2 / D is not much longer
    than the window (r_p = 2 um, D = 3e-11 cm^2/s: r_p^2 / D = 1300 s against t <= 400 s)
    the sphere's curvature adds a term dEs t / (3 tau) to the transient, the fitted slope
    grows and eq. (2) returns D several times too low. The rest after the pulse measures D
    without that assumption: once the faster modes have gone, the potential relaxes as

        E(t) = E_inf + A_1 exp(-k t) + A_2 exp(-(a_2 / a_1)^2 k t),   D_relaxation = k r_p^2 / a_1^2

    (the two slowest modes of diffusion in a sphere with a closed surface, tan a_n = a_n,
    a_1 = 4.4934, a_2 = 7.7253; U linear in x over the small remaining gradient), fitted by
    least squares (E_inf, A_1, A_2, k) from the first rest sample within
    RELAXATION_TAIL_FRACTION of the initial distance |E - E_after| to the end of the rest.
    It needs the tail sampled at least 5 times within its first 2/k and lasting 3/k (NaN
    otherwise, or if the fit fails). A first pulse from the pristine state (x = 1, where U
    falls by ~1 V over the first 2 % of Li) breaks eq. (2)'s linear U: its dEs, and its D,
    come out ~10x too high; the relaxation, at the x after the pulse, is unaffected.

    Pulses are the runs of samples with |current| > current_threshold_A (default 10 % of
    the largest |current|); a pulse starts at its first sample and lasts until the first
    rest sample after it (tau). Pulses without a rest sample on both sides are left out;
    D is NaN when fewer than 3 samples fall in the sqrt(t) window.

    Returns a structured array, one row per pulse, with the columns of ``GITT_DTYPE``
    (``table["soc"]``, ``table["D"]``, ...). soc is the |charge| passed by the end of each
    pulse over the total |charge| of the pulses (the state of charge of a charging
    titration; 1 - soc is the depth of discharge of a discharging one).
    """
    t, potential, current = _check_record(time_s, potential_V, current_A)
    if radius_cm <= 0:
        raise ValueError(f"radius_cm must be positive, got {radius_cm}")
    lo, hi = sqrt_t_window
    if not 0 <= lo < hi:
        raise ValueError(f"sqrt_t_window must satisfy 0 <= lo < hi, got {sqrt_t_window}")
    threshold = 0.1 * np.max(np.abs(current)) if current_threshold_A is None else current_threshold_A
    pulses = _runs(np.abs(current) > threshold)
    dq = _interval_charge(t, current)

    def relaxed(rest_start: int, rest_stop: int) -> float:
        """Mean potential over the last rest_average_s of the rest [rest_start, rest_stop)."""
        tail = t[rest_start:rest_stop] >= t[rest_stop - 1] - rest_average_s
        return float(potential[rest_start:rest_stop][tail].mean())

    rows = []
    for i, (start, stop) in enumerate(pulses):
        if start == 0 or stop == t.size:
            continue
        previous_stop = pulses[i - 1][1] if i > 0 else 0
        next_start = pulses[i + 1][0] if i + 1 < len(pulses) else t.size
        tau = t[stop] - t[start]
        root = np.sqrt(t[start:stop] - t[start])
        window = (root >= lo) & (root <= hi)
        if window.sum() >= 3:
            slope = np.polyfit(root[window], potential[start:stop][window], 1)[0]
        else:
            slope = math.nan
        e_before, e_after = relaxed(previous_stop, start), relaxed(stop, next_start)
        d_es = e_after - e_before
        diffusion = 4.0 / (9.0 * math.pi) * (radius_cm / tau * d_es / slope) ** 2
        rate = _relaxation_rate(t[stop:next_start] - t[stop], potential[stop:next_start], e_after)
        charge = dq[:stop].sum() / _AS_PER_MAH
        rows.append(
            (i, t[start], tau, current[start:stop].mean(), charge, np.abs(dq[:stop]).sum(),
             e_before, e_after, d_es, slope, diffusion, rate,
             rate * radius_cm**2 / SPHERE_SLOWEST_ROOT**2)
        )
    table = np.array(rows, dtype=GITT_DTYPE)
    if table.size:
        table["soc"] /= table["soc"][-1]
    return table


def _relaxation_rate(t_s: np.ndarray, potential_V: np.ndarray, relaxed_V: float) -> float:
    """k (1/s) of the two-mode relaxation fitted to a rest's tail (`gitt_diffusion`); NaN if
    the tail is not sampled at least 5 times in its first 2/k, lasts less than 3/k, or the
    fit fails."""
    distance = np.abs(potential_V - relaxed_V)
    if distance.size < 2 or not distance[0] > 0:
        return math.nan
    tail = np.flatnonzero(distance <= RELAXATION_TAIL_FRACTION * distance[0])
    if tail.size < 5:
        return math.nan
    t, e = t_s[tail[0]:], potential_V[tail[0]:]
    t = t - t[0]
    below = np.flatnonzero(np.abs(e - relaxed_V) <= np.abs(e[0] - relaxed_V) / math.e)
    guess = 1.0 / max(t[below[0]] if below.size else t[-1], t[1])

    second = (SPHERE_SECOND_ROOT / SPHERE_SLOWEST_ROOT) ** 2

    def model(time: np.ndarray, e_inf: float, first: float, other: float, rate: float) -> np.ndarray:
        return e_inf + first * np.exp(-rate * time) + other * np.exp(-second * rate * time)

    with warnings.catch_warnings():
        warnings.simplefilter("error", OptimizeWarning)  # a singular fit: k undetermined
        try:
            (*_, rate), _ = curve_fit(model, t, e, p0=(relaxed_V, e[0] - relaxed_V, 0.0, guess), maxfev=4000)
        except (RuntimeError, ValueError, OptimizeWarning):
            return math.nan
    if not (rate > 0 and rate * t[-1] >= 3.0 and np.count_nonzero(rate * t <= 2.0) >= 5):
        return math.nan  # not several 1/k long, or fewer than 5 samples in its first 2/k
    return float(rate)


class Conductivity(NamedTuple):
    """Four-point-probe result: conductivity (S/cm) and resistivity (ohm cm)."""

    sigma_S_per_cm: np.ndarray
    resistivity_ohm_cm: np.ndarray


def four_point_conductivity(
    voltage_V: ArrayLike,
    current_A: ArrayLike,
    thickness_cm: float,
    geometry: Literal["film", "pellet"] = "film",
    width_cm: float | None = None,
    length_cm: float | None = None,
) -> Conductivity:
    """Electronic conductivity from a four-point-probe measurement (SCIENCE.md eq. 3).

    film (collinear probes on a film much thinner than the probe spacing):
        rho = pi t / ln 2 * V / I
    pellet (current through the thickness t of a w x L face):
        rho = w L / t * V / I
    sigma = 1 / rho. V in V, I in A, t, w, L in cm; rho in ohm cm, sigma in S/cm.
    Broadcast over voltage_V and current_A.
    """
    ratio = np.asarray(voltage_V, dtype=float) / np.asarray(current_A, dtype=float)
    if thickness_cm <= 0:
        raise ValueError(f"thickness_cm must be positive, got {thickness_cm}")
    if geometry == "film":
        if width_cm is not None or length_cm is not None:
            raise ValueError("width_cm and length_cm belong to the pellet geometry, not the film")
        rho = math.pi * thickness_cm / math.log(2.0) * ratio
    elif geometry == "pellet":
        if width_cm is None or length_cm is None or width_cm <= 0 or length_cm <= 0:
            raise ValueError("the pellet geometry needs positive width_cm and length_cm")
        rho = width_cm * length_cm / thickness_cm * ratio
    else:
        raise ValueError(f"geometry must be 'film' or 'pellet', got {geometry!r}")
    return Conductivity(1.0 / rho, rho)


def specific_capacity(time_s: ArrayLike, current_A: ArrayLike, mass_g: float) -> np.ndarray:
    """Cumulative specific charge passed, Q_k = sum_{j<k} I_j (t_{j+1} - t_j) / (3.6 m),
    in mAh/g (I in A, t in s, m in g); 0 at the first sample, rising on charge, falling on
    discharge."""
    t, current = _check_record(time_s, current_A)
    if mass_g <= 0:
        raise ValueError(f"mass_g must be positive, got {mass_g}")
    dq = _interval_charge(t, current)
    return np.concatenate([[0.0], np.cumsum(dq[:-1])]) / (_AS_PER_MAH * mass_g)


@dataclass(frozen=True)
class CycleCapacities:
    """Charge and discharge capacity (mAh/g) of each cycle, in cycle order."""

    cycle: np.ndarray
    charge: np.ndarray
    discharge: np.ndarray


def cycle_capacities(
    time_s: ArrayLike,
    current_A: ArrayLike,
    mass_g: float,
    cycle_index: ArrayLike | None = None,
    rest_current_A: float | None = None,
) -> CycleCapacities:
    """Charge and discharge specific capacity (mAh/g) per cycle of a cycling record.

    charge = sum of I_k (t_{k+1} - t_k) / (3.6 m) over the positive-current intervals of
    the cycle; discharge the same for the negative ones, as a positive number.
    cycle_index: the cycler's cycle number per sample; when None, cycles are detected
    from the current: a cycle starts at the first charging sample after a discharge
    (|I| <= rest_current_A, default 1 % of the largest |I|, is rest and belongs to the
    cycle it falls in). A record that starts discharging has a cycle 0 without charge.
    """
    t, current = _check_record(time_s, current_A)
    if mass_g <= 0:
        raise ValueError(f"mass_g must be positive, got {mass_g}")
    if cycle_index is None:
        rest = 0.01 * np.max(np.abs(current)) if rest_current_A is None else rest_current_A
        state = np.where(current > rest, 1, np.where(current < -rest, -1, 0))
        active = state[state != 0]
        starts = np.zeros(active.size, dtype=np.int64)
        starts[1:] = (active[1:] == 1) & (active[:-1] == -1)
        cycles_active = np.cumsum(starts)
        # rest samples inherit the cycle of the last active sample before them
        position = np.maximum(np.cumsum(state != 0) - 1, 0)
        cycles = cycles_active[position] if active.size else np.zeros(t.size, dtype=np.int64)
    else:
        cycles = np.asarray(cycle_index)
        if cycles.shape != t.shape:
            raise ValueError(f"cycle_index shape {cycles.shape} differs from time_s {t.shape}")
    dq = _interval_charge(t, current) / (_AS_PER_MAH * mass_g)
    labels, which = np.unique(cycles, return_inverse=True)
    charge = np.bincount(which, weights=np.clip(dq, 0, None), minlength=labels.size)
    discharge = np.bincount(which, weights=np.clip(-dq, 0, None), minlength=labels.size)
    return CycleCapacities(labels, charge, discharge)


def coulombic_efficiency(charge: ArrayLike, discharge: ArrayLike) -> np.ndarray:
    """Coulombic efficiency (%) of each cycle of a cathode half cell,
    100 * Q_discharge / Q_charge."""
    return 100.0 * np.asarray(discharge, dtype=float) / np.asarray(charge, dtype=float)


def capacity_retention(capacity: ArrayLike, reference: int = 0) -> np.ndarray:
    """Capacity retention (%) of each cycle, 100 * Q_n / Q_reference, where reference is
    the index of the reference cycle (e.g. the first cycle after formation)."""
    capacity = np.asarray(capacity, dtype=float)
    return 100.0 * capacity / capacity[reference]


def dqdv(
    capacity: ArrayLike,
    voltage_V: ArrayLike,
    dv_V: float = 0.005,
    smoothing_V: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Differential capacity dQ/dV of one branch (a charge or a discharge) of a record.

    Each increment Q_{k+1} - Q_k is counted at the voltage of its interval, the
    increments are summed in voltage bins of dv_V and divided by dv_V, and the result is
    smoothed with a Gaussian of standard deviation smoothing_V. Binning by voltage, not
    differencing, keeps noisy, non-monotonic voltage from producing spikes: jitter only
    moves charge between neighbouring bins, and the area (total Q) is conserved. The
    sign follows the branch: increments are taken along the overall voltage direction,
    so a charge with rising capacity is positive and a discharge with rising discharged
    capacity negative.

    Returns (voltage bin centres in V, dQ/dV in capacity units per V).
    """
    q = np.asarray(capacity, dtype=float)
    v = np.asarray(voltage_V, dtype=float)
    if q.shape != v.shape or q.ndim != 1 or q.size < 2:
        raise ValueError(f"capacity and voltage_V must be 1D of one length >= 2, got {q.shape}, {v.shape}")
    if dv_V <= 0 or smoothing_V < 0:
        raise ValueError("dv_V must be positive and smoothing_V non-negative")
    direction = np.sign(v[-1] - v[0]) or 1.0
    v_mid = (v[1:] + v[:-1]) / 2
    margin = 4.0 * smoothing_V + dv_V  # the smoothing kernel's reach: no charge leaks out
    edges = np.arange(v_mid.min() - margin, v_mid.max() + margin + dv_V, dv_V)
    density = np.histogram(v_mid, bins=edges, weights=np.diff(q))[0] / dv_V
    if smoothing_V > 0:
        density = gaussian_filter1d(density, smoothing_V / dv_V, mode="constant", truncate=4.0)
    return (edges[:-1] + edges[1:]) / 2, direction * density


def cumulative_time(step_time_s: ArrayLike, step_index: ArrayLike) -> np.ndarray:
    """Time since the start of the protocol from each step's own clock (s): at every
    change of step the last step time seen is added to an offset."""
    step_time = np.asarray(step_time_s, dtype=float)
    step = np.asarray(step_index)
    if step.shape != step_time.shape:
        raise ValueError(f"step_index shape {step.shape} differs from step_time_s {step_time.shape}")
    changes = np.flatnonzero(step[1:] != step[:-1]) + 1  # first reading of each new step
    offsets = np.zeros_like(step_time)
    offsets[changes] = step_time[changes - 1]
    return step_time + np.cumsum(offsets)


@dataclass(frozen=True)
class CyclingSummary:
    """What a cycling record gives: per cycle, capacities (mAh/g), coulombic efficiency
    and retention against the first cycle's discharge (%, NaN where undefined); for a
    GITT record, the titration table (`GITT_DTYPE`), else None."""

    capacities: CycleCapacities
    coulombic_efficiency_pct: np.ndarray
    retention_pct: np.ndarray
    gitt: np.ndarray | None


def _timeline(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Time since the start (s), cycle, potential (V) and current (A) of readings given as
    rows (step time s, step, cycle, potential V, current mA); of two readings of one
    instant the later is kept."""
    step_time, step, cycle, potential, current_mA = rows.T
    time_s = cumulative_time(step_time, step)
    keep = np.concatenate([np.diff(time_s) > 0, [True]])
    return time_s[keep], cycle[keep], potential[keep], current_mA[keep] / 1e3


class CyclingAccumulator:
    """Streaming reducer of a cycler's readings (the shape of the other reducers: state in,
    readings in through `add`, a frozen `CyclingSummary` out of `result`).

    mass_g: active mass (g); gitt_radius_cm: particle radius r_p for eq. (2), or None for a
    record that is not a GITT titration. Readings carry each step's own clock
    (``step_time_s``), the step and cycle numbers, the potential (V) and current (mA,
    charge positive); `cumulative_time` chains the step clocks. Two readings of one
    instant (a step's last, the next step's first) keep the later, whose current is the
    one flowing from then on.
    """

    def __init__(self, mass_g: float, gitt_radius_cm: float | None = None):
        if not mass_g > 0:
            raise ValueError(f"mass_g must be positive, got {mass_g}")
        if gitt_radius_cm is not None and not gitt_radius_cm > 0:
            raise ValueError(f"gitt_radius_cm must be positive, got {gitt_radius_cm}")
        self.mass_g, self.gitt_radius_cm = mass_g, gitt_radius_cm
        self._rows: list[tuple[float, float, float, float, float]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, step_time_s: float, step_index: int, cycle_index: int, potential_V: float, current_mA: float) -> None:
        """One cycler reading."""
        self._rows.append((float(step_time_s), float(step_index), float(cycle_index), float(potential_V), float(current_mA)))

    def result(self) -> CyclingSummary:
        """Capacities, efficiency, retention (and the GITT table) of the readings so far;
        ValueError with fewer than two readings."""
        if len(self._rows) < 2:
            raise ValueError(f"a cycling record needs >= 2 readings, got {len(self._rows)}")
        rows = np.asarray(self._rows)
        time_s, cycle, potential, current_A = _timeline(rows)
        # A step's charge flows from its clock's zero: where the log has no reading there
        # (it logs the state the step starts from, then the step some time in), one is
        # added with the current and cycle of the step's first reading, so that time's
        # charge is neither lost nor booked to the step before.
        step_time, step = rows[:, 0], rows[:, 1]
        late = np.flatnonzero((step[1:] != step[:-1]) & (step_time[1:] > 0)) + 1
        started = rows[late].copy()
        started[:, 0] = 0.0
        q_time_s, q_cycle, _, q_current_A = _timeline(np.insert(rows, late, started, axis=0))
        capacities = cycle_capacities(q_time_s, q_current_A, self.mass_g, cycle_index=q_cycle)
        with np.errstate(divide="ignore", invalid="ignore"):
            efficiency = coulombic_efficiency(capacities.charge, capacities.discharge)
            retention = (capacity_retention(capacities.discharge) if capacities.discharge[0] > 0
                         else np.full(capacities.cycle.size, np.nan))
        gitt = None
        if self.gitt_radius_cm is not None:
            gitt = gitt_diffusion(time_s, potential, current_A, radius_cm=self.gitt_radius_cm)
        return CyclingSummary(capacities, efficiency, retention, gitt)
