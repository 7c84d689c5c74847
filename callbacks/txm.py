"""Live TXM-XANES analysis: per-energy previews during the scan, white-line energy per voxel
at the end (SCIENCE.md section 4).

Raw run (``technique="txm"``, from `plans.txm`): one ``primary`` stream whose events carry
a camera frame and ``frame_type`` ("dark", "flat", "projection"), the energy and the
rotation angle (data keys named in the start document's ``txm_keys``). Rows arrive in
``seq_num`` order (the base class joins events and frames), so a dark or flat belongs to
the set that runs until a frame of another type; projections are normalised with the
latest sets.

While the scan runs, every energy whose projections are all in is normalised,
A = -ln[(I - <D>) / (<F> - <D>)] (`analysis.txm.normalize`), and a preview published
(``preview`` stream): the reconstructed central slice (tomography) or the absorbance map
(2D). At the end `reduce_xanes`:

1. registers the energies to the one with the most absorbance: per energy, the median
   over up to ``registration_angles`` evenly spaced angles of the subpixel shift
   (`analysis.txm.register`), applied to every projection of that energy (a sample that
   settles differently after each energy move would otherwise smear the spectra);
2. finds the rotation centre on that energy (`find_center`) and reconstructs every energy
   (`reconstruct`; 3D for ``txm_mode="tomo"``, the projection itself for ``"2d"``);
3. smooths each energy's volume with a Gaussian of ``smooth_voxels`` sigma (the usual
   TXM-XANES voxel averaging: at 2e4 counts per pixel one voxel's spectrum alone
   gives its WL energy to ~0.8 eV; after smoothing and PCA, ~0.05 eV). 2D maps are not
   smoothed: a projection already integrates the particle along the beam;
4. masks the particle: edge jump J = mean(mu at the top energies) - mean(mu at the
   bottom ones) above Otsu's threshold, eroded by ``mask_erosion`` + ceil(smooth_voxels)
   voxels (partial volumes at the surface);
5. denoises the particle's spectra (`pca_denoise`, Gavish-Donoho rank) and fits the
   white-line energy per voxel (`whiteline_energy`, local quadratic, h = 1 after PCA,
   h = 2 without);
6. histogram, mean and sigma over the mask (`whiteline_statistics`).

Derived run streams: ``preview`` (per energy), ``registration`` (per energy: shifts),
``whiteline`` (one event: ``wl_eV`` volume, NaN outside the mask; ``mask``;
``edge_jump``; centre) and ``statistics`` (one event: mean, median, sigma, counts, histogram).
Live values: ``wl_sigma_eV``, ``wl_mean_eV``, ``energies_done``.

Memory: raw frames are kept per energy until complete, absorbances for every energy
until the end: 4 bytes x energies x angles x frame pixels (21 MB for 21 x 61 x 64 x 64;
63 GB at 21 x 721 x 1024^2, where the per-energy stacks would have to be reconstructed as
they complete and spilled to disk, or chunked with dask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.ndimage
from skimage.filters import threshold_otsu

from ..analysis.txm import (
    WhitelineStatistics,
    find_center,
    normalize,
    pca_denoise,
    reconstruct,
    register,
    whiteline_energy,
    whiteline_statistics,
)
from .derived import AnalysisCallback

#: Fewest complete energies for a white-line fit (3-point quadratic, maximum inside).
MIN_ENERGIES = 5


@dataclass(frozen=True)
class XanesReduction:
    """Result of `reduce_xanes`.

    wl_eV : white-line energy per voxel (eV; (rows, n, n) tomography, (rows, cols) 2D),
        NaN outside ``mask``.
    mask : the particle's voxels analysed. edge_jump : J per voxel (attenuation per voxel).
    shifts_px : (n_energies, 2) shifts applied to each energy (rows, cols; pixels).
    reference_index : the energy registered to. center_px : rotation axis (detector
    column; NaN for 2D). n_components : PCA rank kept (0: no denoising).
    statistics : `whiteline_statistics` over ``mask``.
    """

    wl_eV: np.ndarray
    mask: np.ndarray
    edge_jump: np.ndarray
    shifts_px: np.ndarray
    reference_index: int
    center_px: float
    n_components: int
    statistics: WhitelineStatistics


def _register_energies(absorbance: np.ndarray, reference: int, n_angles: int) -> tuple[np.ndarray, np.ndarray]:
    """Shift every energy's projections onto the reference energy's (see module notes)."""
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
    absorbance: np.ndarray,
    energies_eV: np.ndarray,
    angles_deg: np.ndarray,
    *,
    tomography: bool,
    smooth_voxels: float = 1.0,
    mask_erosion: int = 1,
    denoise: bool = True,
    registration_angles: int = 8,
    bins: int = 80,
) -> XanesReduction:
    """White-line energy per voxel from normalised projections (steps 1-6 of the module notes).

    absorbance : (n_energies, n_angles, rows, cols) -ln T; energies_eV : (n_energies,)
    increasing; angles_deg : (n_angles,) degrees (a single angle for 2D maps).
    """
    n_energies = len(energies_eV)
    reference = int(np.argmax(absorbance.mean(axis=(1, 2, 3))))
    registered, shifts = _register_energies(absorbance, reference, registration_angles)
    if tomography:
        center = find_center(registered[reference], angles_deg)
        volumes = np.stack([reconstruct(stack, angles_deg, center) for stack in registered])
    else:  # a projection integrates the particle along the beam: no smoothing needed
        center, smooth_voxels = math.nan, 0.0
        volumes = registered[:, 0]
    if smooth_voxels > 0:
        volumes = np.stack([scipy.ndimage.gaussian_filter(v, smooth_voxels) for v in volumes])
    k = max(1, n_energies // 7)
    edge_jump = volumes[-k:].mean(axis=0) - volumes[:k].mean(axis=0)
    mask = _particle_mask(edge_jump, mask_erosion + math.ceil(smooth_voxels))
    spectra = np.moveaxis(volumes[:, mask], 0, -1)
    n_components = 0
    if denoise and spectra.shape[0] > n_energies:
        spectra, n_components = pca_denoise(spectra)
    wl, _ = whiteline_energy(spectra, energies_eV, half_width=1 if n_components else 2)
    wl_eV = np.full(mask.shape, np.nan, dtype=np.float32)
    wl_eV[mask] = wl
    return XanesReduction(
        wl_eV=wl_eV,
        mask=mask,
        edge_jump=edge_jump.astype(np.float32),
        shifts_px=shifts,
        reference_index=reference,
        center_px=float(center),
        n_components=int(n_components),
        statistics=whiteline_statistics(wl_eV, mask, bins=bins),
    )


class TxmXanesCallback(AnalysisCallback):
    """TXM-XANES reduction of ``technique="txm"`` runs; see the module docstring.

    Parameters
    ----------
    smooth_voxels: Gaussian sigma (voxels) applied to each energy's volume before the
        per-voxel fit (0: none; tomography only).
    mask_erosion: voxels removed from the Otsu mask's surface, besides ceil(smooth_voxels).
    denoise: PCA-denoise the particle's spectra before the white-line fit.
    registration_angles: angles whose median shift registers each energy.
    bins: histogram bins of the white-line energies.
    """

    analysis = "txm_xanes"
    techniques = ("txm",)

    def __init__(
        self,
        smooth_voxels: float = 1.0,
        mask_erosion: int = 1,
        denoise: bool = True,
        registration_angles: int = 8,
        bins: int = 80,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.options = {
            "smooth_voxels": float(smooth_voxels),
            "mask_erosion": int(mask_erosion),
            "denoise": bool(denoise),
            "registration_angles": int(registration_angles),
            "bins": int(bins),
        }
        self.live_signal("wl_sigma_eV", float, math.nan)
        self.live_signal("wl_mean_eV", float, math.nan)
        self.live_signal("energies_done", int, 0)

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), **self.options}

    def open_run(self, start: dict[str, Any]) -> None:
        missing = [k for k in ("energies_eV", "angles_deg", "txm_mode", "txm_keys") if k not in start]
        if missing:
            raise ValueError(f"A txm run must record {missing} in its start document.")
        self.energies = np.asarray(start["energies_eV"], dtype=np.float64)
        self.angles = np.asarray(start["angles_deg"], dtype=np.float64)
        self.tomography = start["txm_mode"] == "tomo"
        self.keys = start["txm_keys"]
        self.voxel_um = float(start.get("pixel_size_um", math.nan))
        self._raw: dict[int, np.ndarray] = {}
        self._seen: dict[int, np.ndarray] = {}
        self._absorbance: dict[int, np.ndarray] = {}
        self._sets: dict[str, list[np.ndarray]] = {"dark": [], "flat": []}
        self._last_type: str | None = None

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        kind = str(data[self.keys["frame_type"]])
        image = np.asarray(frame, dtype=np.float32)
        if kind in self._sets:
            if kind != self._last_type:
                self._sets[kind] = []  # a new set of darks or flats begins
            self._sets[kind].append(image)
        elif kind == "projection":
            self._add_projection(float(data[self.keys["energy"]]), float(data[self.keys["angle"]]), image)
        self._last_type = kind

    def _add_projection(self, energy_eV: float, angle_deg: float, image: np.ndarray) -> None:
        e = int(np.argmin(np.abs(self.energies - energy_eV)))
        a = int(np.argmin(np.abs(self.angles - angle_deg)))
        if e in self._absorbance:
            raise ValueError(f"a projection at {energy_eV} eV, {angle_deg} deg arrived after that energy was complete")
        if e not in self._raw:
            self._raw[e] = np.empty((len(self.angles), *image.shape), dtype=np.float32)
            self._seen[e] = np.zeros(len(self.angles), dtype=bool)
        self._raw[e][a] = image
        self._seen[e][a] = True
        if self._seen[e].all():
            self._complete(e)

    def _complete(self, e: int) -> None:
        if not self._sets["dark"] or not self._sets["flat"]:
            raise ValueError("projections arrived before any dark and flat frames")
        absorbance = normalize(
            self._raw.pop(e), np.stack(self._sets["flat"]), np.stack(self._sets["dark"]), minus_log=True
        )
        del self._seen[e]
        self._absorbance[e] = absorbance
        if self.tomography:
            sinogram = absorbance[:, absorbance.shape[1] // 2]
            center = find_center(sinogram, self.angles)
            preview = reconstruct(sinogram, self.angles, center)
        else:
            center, preview = math.nan, absorbance[0]
        self.derived.event(
            "preview",
            {"energy_eV": float(self.energies[e]), "energy_index": e, "center_px": float(center), "image": preview},
        )
        self.set_live("energies_done", len(self._absorbance))

    def finish(self) -> None:
        done = sorted(self._absorbance)
        if len(done) < MIN_ENERGIES:
            raise ValueError(
                f"only {len(done)} of {len(self.energies)} energies are complete; the white-line "
                f"fit needs >= {MIN_ENERGIES}"
            )
        energies = self.energies[done]
        result = reduce_xanes(
            np.stack([self._absorbance.pop(e) for e in done]),
            energies,
            self.angles,
            tomography=self.tomography,
            **self.options,
        )
        for energy, (rows, cols) in zip(energies, result.shifts_px, strict=True):
            self.derived.event(
                "registration", {"energy_eV": float(energy), "shift_rows_px": float(rows), "shift_cols_px": float(cols)}
            )
        self.derived.event(
            "whiteline",
            {
                "wl_eV": result.wl_eV,
                "mask": result.mask.astype(np.uint8),
                "edge_jump": result.edge_jump,
                "center_px": result.center_px,
                "reference_energy_eV": float(energies[result.reference_index]),
                "voxel_um": self.voxel_um,
            },
        )
        stats = result.statistics
        self.derived.event(
            "statistics",
            {
                "wl_mean_eV": stats.mean_eV,
                "wl_median_eV": stats.median_eV,
                "wl_sigma_eV": stats.sigma_eV,
                "n_voxels": stats.n_voxels,
                "n_failed": stats.n_failed,
                "n_energies": len(done),
                "n_pca_components": result.n_components,
                "counts": stats.counts,
                "bin_edges_eV": stats.bin_edges_eV,
            },
        )
        self.set_live("wl_sigma_eV", stats.sigma_eV)
        self.set_live("wl_mean_eV", stats.mean_eV)
