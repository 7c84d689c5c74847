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
   WL energy to ~0.8 eV; after smoothing and the subspace fit, 0.03 eV on the phantom of
   tests/analysis/test_txm.py). 2D maps are not smoothed: a
   projection already integrates the particle along the beam;
4. masks the particle: edge jump J = mean(mu at the top k energies) - mean(mu at the
   bottom k), k = max(1, n_energies // 7), above Otsu's threshold, eroded by
   ``mask_erosion`` + ceil(smooth_voxels) voxels (partial volumes at the surface);
5. fits the white-line energy per voxel: the maximum of the quintic spline of the
   particle's spectra projected onto their mean + leading principal components
   (Gavish-Donoho rank; `whiteline_operator`, the default method of `whiteline_energy`),
   or without ``denoise`` the 5-point local quadratic (`whiteline_energy`
   ``method="quadratic"``);
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
from nanostrain.analysis.xanes import WhitelineStatistics, whiteline_energy, whiteline_operator, whiteline_statistics

#: Fewest complete energies for a white-line fit: the 5-point quadratic (without
#: denoising) with its maximum inside, 5 + 2; the subspace spline needs 6.
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
    denoise : fit the white line in the particle's principal subspace (`whiteline_operator`);
        False: the 5-point quadratic on each voxel alone.
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


def screen_frame(
    kind: str,
    image: ArrayLike,
    frame_shape: tuple[int, int] | None = None,
    dead_mask: np.ndarray | None = None,
    saturation: float | None = None,
) -> tuple[FrameQuality, str, np.ndarray | None]:
    """One frame of ``kind`` checked (module notes, "Frames"): (quality, the reason it is
    skipped or "", the frame to use with its masked pixels filled (float32) or None).
    ``frame_shape``: the camera's (rows, cols); None takes the frame's own."""
    array = np.asarray(image)
    shape = frame_shape or (array.shape if array.ndim == 2 else None)
    if shape is None:
        quality = FrameQuality(BAD, f"a frame of shape {array.shape} is not an image (rows, cols)")
        return quality, quality.reason, None
    quality, mask = assess_frame(array, shape, dead_mask=dead_mask, saturation=saturation)
    if not quality.usable:
        return quality, quality.reason, None
    if quality.status == NO_SIGNAL and kind != "dark" and not np.max(array[~mask]) > 0:
        return quality, f"{quality.reason}; a {kind} without counts measures no transmission", None
    return quality, "", fill_nearest(array, mask)


OTSU_BINS = 256
"""Histogram bins of the edge jump for Otsu's threshold (scikit-image's default)."""


def registration_picks(n_angles: int, registration_angles: int) -> np.ndarray:
    """Indices of the (up to ``registration_angles``) evenly spaced angles whose median
    shift registers each energy (step 1 of the module notes)."""
    return np.unique(np.linspace(0, n_angles - 1, min(registration_angles, n_angles)).round().astype(int))


def energy_shift(images: ArrayLike, references: ArrayLike) -> np.ndarray:
    """Shift (rows, cols; pixels) of one energy onto the reference energy: the median over
    the picked angles of each projection's subpixel shift against the reference energy's
    projection at that angle (`analysis.txm.register`'s phase correlation).

    images, references : (n_picks, rows, cols) the energy's and the reference's projections.
    """
    images = np.asarray(images, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    return np.median(np.stack([register(image[None], reference=reference)[1][0]
                               for image, reference in zip(images, references, strict=True)]), axis=0)


def shift_projections(projections: ArrayLike, shift: ArrayLike) -> np.ndarray:
    """Every projection (n, rows, cols) resampled by ``shift`` (rows, cols; pixels), as
    `analysis.txm.register` does: cubic splines, edges continued (float32 out)."""
    projections = np.asarray(projections, dtype=np.float32)
    return np.stack([scipy.ndimage.shift(image, shift, order=3, mode="nearest") for image in projections])


def smoothing_radius(smooth_voxels: float) -> int:
    """Voxels of neighbourhood the Gaussian smoothing reads on each side:
    int(4 sigma + 0.5) (``scipy.ndimage.gaussian_filter``'s truncation at 4 sigma)."""
    return int(4.0 * smooth_voxels + 0.5) if smooth_voxels > 0 else 0


def smooth_volume(volume: np.ndarray, smooth_voxels: float) -> np.ndarray:
    """One energy's volume smoothed by a Gaussian of ``smooth_voxels`` sigma (step 3)."""
    return scipy.ndimage.gaussian_filter(volume, smooth_voxels) if smooth_voxels > 0 else volume


def edge_jump_energies(n_energies: int) -> int:
    """k of the edge jump J = mean(mu at the top k energies) - mean(mu at the bottom k):
    max(1, n_energies // 7)."""
    return max(1, n_energies // 7)


def edge_jump(lowest: ArrayLike, highest: ArrayLike) -> np.ndarray:
    """J per voxel (step 4) from the volumes of the bottom k and the top k energies
    ((k, ...) each, k = `edge_jump_energies`), float32."""
    return (np.asarray(highest).mean(axis=0) - np.asarray(lowest).mean(axis=0)).astype(np.float32)


def particle_threshold(counts: ArrayLike, edges: ArrayLike) -> float:
    """Otsu's threshold of the edge jump from its histogram (``OTSU_BINS`` bins over
    [min J, max J]; `skimage.filters.threshold_otsu` on the bin centres). A histogram
    of one value (min = max) gives that value: no voxel lies above it. The histogram
    form lets a volume too large for memory be thresholded from per-block counts."""
    counts, edges = np.asarray(counts), np.asarray(edges, dtype=np.float64)
    if edges[0] == edges[-1]:
        return float(edges[0])
    return float(threshold_otsu(hist=(counts, 0.5 * (edges[:-1] + edges[1:]))))


def jump_histogram(jump: ArrayLike, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of the edge jump over [low, high] in ``OTSU_BINS`` bins; blocks of
    one volume histogrammed with the volume's low and high add up to the volume's."""
    return np.histogram(np.asarray(jump), bins=OTSU_BINS, range=(float(low), float(high)))


def particle_mask(jump: np.ndarray, threshold: float, erosion: int) -> np.ndarray:
    """Voxels whose edge jump exceeds ``threshold``, eroded by ``erosion`` voxels."""
    mask = jump > threshold
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

    The same steps, block by block on a dask cluster with the volumes in chunked storage,
    give the same result for scans larger than memory (`nanostrain.analyze_txm`).
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
    reference = int(np.argmax([energy.mean(dtype=np.float64) for energy in absorbance]))
    picks = registration_picks(angles.size, options.registration_angles)
    shifts = np.stack([energy_shift(energy[picks], absorbance[reference, picks]) for energy in absorbance])
    registered = np.stack([shift_projections(energy, shift) for energy, shift in zip(absorbance, shifts)])
    if tomography:
        center = find_center(registered[reference], angles)
        volumes = np.stack([smooth_volume(reconstruct(stack, angles, center), smooth_voxels) for stack in registered])
    else:  # a projection integrates the particle along the beam: no smoothing needed
        center, smooth_voxels = math.nan, 0.0
        volumes = registered[:, 0]
    k = edge_jump_energies(n_energies)
    jump = edge_jump(volumes[:k], volumes[-k:])
    mask = particle_mask(jump, particle_threshold(*jump_histogram(jump, float(jump.min()), float(jump.max()))),
                         options.mask_erosion + math.ceil(smooth_voxels))
    spectra = np.moveaxis(volumes[:, mask], 0, -1)
    n_components = 0
    if options.denoise and spectra.shape[0] > n_energies:
        estimator = whiteline_operator(spectra, energies)
        wl, _ = estimator(spectra)
        n_components = estimator.n_components
    else:  # a voxel alone: the 5-point quadratic is the less noisy (see whiteline_energy)
        wl, _ = whiteline_energy(spectra, energies, method="quadratic")
    wl_eV = np.full(mask.shape, np.nan, dtype=np.float32)
    wl_eV[mask] = wl
    return XanesReduction(
        energies_eV=energies,
        wl_eV=wl_eV,
        mask=mask,
        edge_jump=jump,
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
        quality, reason, frame = screen_frame(kind, image, self._frame_shape, self.dead_mask, self.saturation)
        if frame is not None:
            self._frame_shape = frame.shape
        return quality, reason, frame

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
