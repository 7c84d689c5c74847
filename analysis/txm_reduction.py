"""Streaming TXM-XANES reduction: frames in, white-line energy per voxel out (SCIENCE.md
section 4; docs/txm.md).

A XANES scan brings dark frames (shutter closed), flat frames (sample out) and, at each
energy, projections over the rotation angles. `TxmXanesAccumulator` takes them in the
order they were taken:

* a dark or flat belongs to the set that runs until a frame of another kind arrives; the
  next dark (flat) after any other frame starts a new set, which replaces the old one;
* when every angle of an energy is in, that energy is normalised with the latest sets,

      A = -ln[(I - <D>) / (<F> - <D>)]                          (`analysis.txm.normalize`)

  and a preview is returned (`EnergyPreview`): the reconstructed central slice
  (tomography) or the absorbance map (2D);
* `result` runs `reduce_xanes` on the complete energies (at least ``MIN_ENERGIES``).

`reduce_xanes`:

1. registers the energies to the one with the most absorbance: per energy, the median
   over up to ``registration_angles`` evenly spaced angles of the subpixel shift
   (`analysis.txm.register`), applied to every projection of that energy (a sample that
   settles differently after each energy move would otherwise smear the spectra);
2. finds the rotation centre on that energy (`find_center`) and reconstructs every energy
   (`reconstruct`; 3D for tomography, the projection itself for 2D maps);
3. smooths each energy's volume with a Gaussian of ``smooth_voxels`` sigma (the usual
   TXM-XANES voxel averaging: at 2e4 counts per pixel one voxel's spectrum alone gives its
   WL energy to ~0.8 eV; after smoothing and PCA, ~0.05 eV). 2D maps are not smoothed: a
   projection already integrates the particle along the beam;
4. masks the particle: edge jump J = mean(mu at the top k energies) - mean(mu at the
   bottom k), k = max(1, n_energies // 7), above Otsu's threshold, eroded by
   ``mask_erosion`` + ceil(smooth_voxels) voxels (partial volumes at the surface);
5. denoises the particle's spectra (`pca_denoise`, Gavish-Donoho rank) and fits the
   white-line energy per voxel (`whiteline_energy`, local quadratic, h = 1 after PCA,
   h = 2 without);
6. histogram, mean and sigma over the mask (`whiteline_statistics`).

Frames: every frame is checked first (`analysis.frame_quality.assess_frame`: the camera's
shape, numbers, non-finite, saturated and dead pixels). A bad frame (wrong shape, more
than `frame_quality.MAX_MASKED_FRACTION` masked) is skipped with its reason; so is a flat or a
projection without a count above zero (no transmission to measure: beam off or camera
dead; a uniform frame of counts is used, and a dark without signal is a valid dark). Masked pixels of a usable frame take the value of their nearest unmasked pixel
(`fill_nearest`). An energy with a skipped projection never completes and is left out of
`result` (which needs ``MIN_ENERGIES`` complete ones): nothing is made up for it.

Memory: raw frames are kept per energy until it is complete, absorbances of every energy
until the end: 4 bytes x energies x angles x frame pixels (21 MB for 21 x 61 x 64 x 64;
63 GB at 21 x 721 x 1024^2, where the per-energy stacks would have to be reconstructed as
they complete and spilled to disk, or chunked with dask).

Units: energies in eV, angles in degrees, absorbance -ln T, shifts and centre in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
from numpy.typing import ArrayLike
from skimage.filters import threshold_otsu

from nanostrain.analysis.frame_quality import BAD, NO_SIGNAL, FrameQuality, assess_frame, fill_nearest
from nanostrain.analysis.txm import find_center, normalize, reconstruct, register
from nanostrain.analysis.xanes import WhitelineStatistics, pca_denoise, whiteline_energy, whiteline_statistics

#: Fewest complete energies for a white-line fit: `whiteline_energy`'s 5-point quadratic
#: (half width 2, used unless PCA denoising applies) with its maximum inside, 5 + 2.
MIN_ENERGIES = 7

#: Acquisition modes: a tomogram per energy, or one projection per energy (2D map).
MODES = ("tomo", "2d")

#: Frame kinds of a XANES scan (the ``frame_type`` the plans record).
FRAME_KINDS = ("dark", "flat", "projection")


@dataclass(frozen=True)
class TxmFrame:
    """What `TxmXanesAccumulator.add` did with one frame: its ``quality``, the ``reason``
    it was skipped (empty when it was used) and the ``preview`` of the energy it
    completed, if any."""

    quality: FrameQuality
    reason: str = ""
    preview: EnergyPreview | None = None

    @property
    def used(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class XanesOptions:
    """Settings of `reduce_xanes`.

    smooth_voxels : Gaussian sigma (voxels) applied to each energy's volume before the
        per-voxel fit (0: none; tomography only).
    mask_erosion : voxels removed from the Otsu mask's surface, besides ceil(smooth_voxels).
    denoise : PCA-denoise the particle's spectra before the white-line fit.
    registration_angles : angles whose median shift registers each energy (>= 1).
    bins : histogram bins of the white-line energies (>= 1).
    """

    smooth_voxels: float = 1.0
    mask_erosion: int = 1
    denoise: bool = True
    registration_angles: int = 8
    bins: int = 80

    def __post_init__(self) -> None:
        for name in ("mask_erosion", "registration_angles", "bins"):
            value = getattr(self, name)
            if isinstance(value, bool) or not float(value).is_integer():
                raise ValueError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "smooth_voxels", float(self.smooth_voxels))
        object.__setattr__(self, "denoise", bool(self.denoise))
        if not (math.isfinite(self.smooth_voxels) and self.smooth_voxels >= 0):
            raise ValueError(f"smooth_voxels must be >= 0, got {self.smooth_voxels}")
        if self.mask_erosion < 0:
            raise ValueError(f"mask_erosion must be >= 0, got {self.mask_erosion}")
        if self.registration_angles < 1 or self.bins < 1:
            raise ValueError(f"registration_angles and bins must be >= 1, got {self.registration_angles}, {self.bins}")


@dataclass(frozen=True)
class XanesReduction:
    """Result of `reduce_xanes` (and `TxmXanesAccumulator.result`).

    energies_eV : (n_energies,) the energies reduced (eV).
    wl_eV : white-line energy per voxel (eV; (rows, n, n) tomography, (rows, cols) 2D),
        NaN outside ``mask``.
    mask : the particle's voxels analysed. edge_jump : J per voxel (attenuation per voxel).
    shifts_px : (n_energies, 2) shifts applied to each energy (rows, cols; pixels).
    reference_index : the energy registered to. center_px : rotation axis (detector
    column; NaN for 2D). n_components : PCA rank kept (0: no denoising).
    statistics : `whiteline_statistics` over ``mask``.
    """

    energies_eV: np.ndarray
    wl_eV: np.ndarray
    mask: np.ndarray
    edge_jump: np.ndarray
    shifts_px: np.ndarray
    reference_index: int
    center_px: float
    n_components: int
    statistics: WhitelineStatistics


@dataclass(frozen=True)
class EnergyPreview:
    """What `TxmXanesAccumulator` reports when an energy is complete.

    energy_index : index into the scan's energies; energy_eV : that energy (eV);
    center_px : rotation axis found on the central sinogram (NaN for 2D);
    image : the reconstructed central slice (n, n) or the absorbance map (rows, cols).
    """

    energy_index: int
    energy_eV: float
    center_px: float
    image: np.ndarray


def _register_energies(absorbance: np.ndarray, reference: int, n_angles: int) -> tuple[np.ndarray, np.ndarray]:
    """Shift every energy's projections onto the reference energy's (step 1 of the notes)."""
    picks = np.unique(np.linspace(0, absorbance.shape[1] - 1, min(n_angles, absorbance.shape[1])).round().astype(int))
    shifts = np.median(
        np.stack([register(absorbance[:, a], reference=absorbance[reference, a])[1] for a in picks]), axis=0
    )
    registered = np.empty_like(absorbance)
    for e, shift in enumerate(shifts):
        for a, image in enumerate(absorbance[e]):
            registered[e, a] = scipy.ndimage.shift(image, shift, order=3, mode="nearest")
    return registered, shifts


def _particle_mask(edge_jump: np.ndarray, erosion: int) -> np.ndarray:
    """Voxels whose edge jump exceeds Otsu's threshold, eroded by ``erosion`` voxels."""
    mask = edge_jump > threshold_otsu(edge_jump)
    return scipy.ndimage.binary_erosion(mask, iterations=erosion) if erosion else mask


def reduce_xanes(
    absorbance: ArrayLike,
    energies_eV: ArrayLike,
    angles_deg: ArrayLike,
    *,
    tomography: bool,
    options: XanesOptions | None = None,
) -> XanesReduction:
    """White-line energy per voxel from normalised projections (steps 1-6 of the module notes).

    absorbance : (n_energies, n_angles, rows, cols) -ln T; energies_eV : (n_energies,)
    strictly increasing (eV), at least ``MIN_ENERGIES``; angles_deg : (n_angles,) degrees
    (a single angle for 2D maps); options : `XanesOptions` (None: the defaults).
    """
    options = options or XanesOptions()
    absorbance = np.asarray(absorbance)
    energies = np.asarray(energies_eV, dtype=np.float64)
    angles = np.asarray(angles_deg, dtype=np.float64)
    if absorbance.ndim != 4 or absorbance.shape[:2] != (energies.size, angles.size):
        raise ValueError(
            f"absorbance must be (n_energies={energies.size}, n_angles={angles.size}, rows, cols), "
            f"got {absorbance.shape}"
        )
    if energies.size < MIN_ENERGIES:
        raise ValueError(f"the white-line fit needs >= {MIN_ENERGIES} energies, got {energies.size}")
    n_energies = energies.size
    smooth_voxels = options.smooth_voxels
    reference = int(np.argmax(absorbance.mean(axis=(1, 2, 3))))
    registered, shifts = _register_energies(absorbance, reference, options.registration_angles)
    if tomography:
        center = find_center(registered[reference], angles)
        volumes = np.stack([reconstruct(stack, angles, center) for stack in registered])
    else:  # a projection integrates the particle along the beam: no smoothing needed
        center, smooth_voxels = math.nan, 0.0
        volumes = registered[:, 0]
    if smooth_voxels > 0:
        volumes = np.stack([scipy.ndimage.gaussian_filter(v, smooth_voxels) for v in volumes])
    k = max(1, n_energies // 7)
    edge_jump = volumes[-k:].mean(axis=0) - volumes[:k].mean(axis=0)
    mask = _particle_mask(edge_jump, options.mask_erosion + math.ceil(smooth_voxels))
    spectra = np.moveaxis(volumes[:, mask], 0, -1)
    n_components = 0
    if options.denoise and spectra.shape[0] > n_energies:
        spectra, n_components = pca_denoise(spectra)
    wl, _ = whiteline_energy(spectra, energies, half_width=1 if n_components else 2)
    wl_eV = np.full(mask.shape, np.nan, dtype=np.float32)
    wl_eV[mask] = wl
    return XanesReduction(
        energies_eV=energies,
        wl_eV=wl_eV,
        mask=mask,
        edge_jump=edge_jump.astype(np.float32),
        shifts_px=shifts,
        reference_index=reference,
        center_px=float(center),
        n_components=int(n_components),
        statistics=whiteline_statistics(wl_eV, mask, bins=options.bins),
    )


class TxmXanesAccumulator:
    """Streaming TXM-XANES reduction of one scan; see the module notes.

    energies_eV : (n_energies,) the scan's energies (eV, strictly increasing);
    angles_deg : (n_angles,) its rotation angles (deg; one angle for a 2D map);
    mode : "tomo" (a tomogram per energy) or "2d" (one projection per energy);
    options : `XanesOptions` of the final reduction (None: the defaults);
    frame_shape : (rows, cols) of the camera (None: the first frame's);
    dead_mask, saturation : dead pixels and saturation level (`assess_frame`).

    Frames go in with `add` in the order they were taken; a projection is assigned to the
    nearest scan energy and angle. `add` returns a `TxmFrame`: the frame's quality, why
    it was skipped if it was, and an `EnergyPreview` when the frame completed an energy.
    """

    def __init__(
        self,
        energies_eV: ArrayLike,
        angles_deg: ArrayLike,
        mode: str,
        options: XanesOptions | None = None,
        *,
        frame_shape: tuple[int, int] | None = None,
        dead_mask: np.ndarray | None = None,
        saturation: float | None = None,
    ) -> None:
        self.energies_eV = np.atleast_1d(np.asarray(energies_eV, dtype=np.float64))
        self.angles_deg = np.atleast_1d(np.asarray(angles_deg, dtype=np.float64))
        if self.energies_eV.ndim != 1 or np.any(np.diff(self.energies_eV) <= 0):
            raise ValueError(f"energies_eV must increase strictly, got {self.energies_eV}")
        if self.angles_deg.ndim != 1 or self.angles_deg.size == 0:
            raise ValueError(f"angles_deg must hold >= 1 angle, got {self.angles_deg}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.tomography = mode == "tomo"
        self.options = options or XanesOptions()
        self._raw: dict[int, np.ndarray] = {}
        self._seen: dict[int, np.ndarray] = {}
        self._absorbance: dict[int, np.ndarray] = {}
        self._sets: dict[str, list[np.ndarray]] = {"dark": [], "flat": []}
        self._last_kind: str | None = None
        self._frame_shape = None if frame_shape is None else (int(frame_shape[0]), int(frame_shape[1]))
        self.dead_mask, self.saturation = dead_mask, saturation

    @property
    def n_complete(self) -> int:
        """Energies whose projections are all in (normalised)."""
        return len(self._absorbance)

    @property
    def n_incomplete(self) -> int:
        """Energies not (yet) complete: a projection missing or skipped as bad."""
        return self.energies_eV.size - len(self._absorbance)

    def add(
        self, kind: str, image: ArrayLike, energy_eV: float | None = None, angle_deg: float | None = None
    ) -> TxmFrame:
        """One frame of ``kind`` "dark", "flat" or "projection" (the latter with its energy
        (eV) and angle (deg)), checked first (module notes, "Frames"); returns what was
        done with it, with the energy's preview if it completed one."""
        if kind not in FRAME_KINDS:
            raise ValueError(f"frame kind must be one of {FRAME_KINDS}, got {kind!r}")
        if kind == "projection" and (energy_eV is None or angle_deg is None):
            raise ValueError("a projection needs its energy_eV and angle_deg")
        quality, reason, frame = self._screen(kind, image)
        if frame is None:
            return TxmFrame(quality, reason)
        if kind == "projection":
            return TxmFrame(quality, preview=self._add_projection(energy_eV, angle_deg, frame))
        if kind != self._last_kind:
            self._sets[kind] = []  # a new set of darks or flats begins
        self._sets[kind].append(frame)
        self._last_kind = kind
        return TxmFrame(quality)

    def _screen(self, kind: str, image: ArrayLike) -> tuple[FrameQuality, str, np.ndarray | None]:
        """(quality, reason the frame is skipped or "", the frame to use with its masked
        pixels filled (float32) or None)."""
        array = np.asarray(image)
        shape = self._frame_shape or (array.shape if array.ndim == 2 else None)
        if shape is None:
            quality = FrameQuality(BAD, f"a frame of shape {array.shape} is not an image (rows, cols)")
            return quality, quality.reason, None
        quality, mask = assess_frame(array, shape, dead_mask=self.dead_mask, saturation=self.saturation)
        if not quality.usable:
            return quality, quality.reason, None
        if quality.status == NO_SIGNAL and kind != "dark" and not np.max(array[~mask]) > 0:
            return quality, f"{quality.reason}; a {kind} without counts measures no transmission", None
        self._frame_shape = shape
        return quality, "", fill_nearest(array, mask)

    def _add_projection(self, energy_eV: float, angle_deg: float, frame: np.ndarray) -> EnergyPreview | None:
        """A checked projection at ``energy_eV`` (eV) and ``angle_deg`` (deg); the preview
        if it completes its energy."""
        self._last_kind = "projection"
        e = int(np.argmin(np.abs(self.energies_eV - energy_eV)))
        a = int(np.argmin(np.abs(self.angles_deg - angle_deg)))
        if e in self._absorbance:
            raise ValueError(f"a projection at {energy_eV} eV, {angle_deg} deg arrived after that energy was complete")
        if e not in self._raw:
            self._raw[e] = np.empty((self.angles_deg.size, *frame.shape), dtype=np.float32)
            self._seen[e] = np.zeros(self.angles_deg.size, dtype=bool)
        self._raw[e][a] = frame
        self._seen[e][a] = True
        return self._complete(e) if self._seen[e].all() else None

    def _complete(self, e: int) -> EnergyPreview:
        if not self._sets["dark"] or not self._sets["flat"]:
            raise ValueError("projections arrived before any dark and flat frames")
        absorbance = normalize(
            self._raw.pop(e), np.stack(self._sets["flat"]), np.stack(self._sets["dark"]), minus_log=True
        )
        del self._seen[e]
        self._absorbance[e] = absorbance
        if self.tomography:
            sinogram = absorbance[:, absorbance.shape[1] // 2]
            center = find_center(sinogram, self.angles_deg)
            preview = reconstruct(sinogram, self.angles_deg, center)
        else:
            center, preview = math.nan, absorbance[0]
        return EnergyPreview(energy_index=e, energy_eV=float(self.energies_eV[e]), center_px=float(center),
                             image=preview)

    def result(self) -> XanesReduction:
        """`reduce_xanes` of the complete energies; ValueError if fewer than MIN_ENERGIES."""
        done = sorted(self._absorbance)
        if len(done) < MIN_ENERGIES:
            raise ValueError(
                f"only {len(done)} of {self.energies_eV.size} energies are complete; the white-line "
                f"fit needs >= {MIN_ENERGIES}"
            )
        return reduce_xanes(
            np.stack([self._absorbance[e] for e in done]),
            self.energies_eV[done],
            self.angles_deg,
            tomography=self.tomography,
            options=self.options,
        )
