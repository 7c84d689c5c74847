"""Live TXM-XANES analysis: per-energy previews during the scan, white-line energy per voxel
at the end (SCIENCE.md section 4).

Raw run (``technique="txm"``, from `plans.txm`): one ``primary`` stream whose events carry
a camera frame and ``frame_type`` ("dark", "flat", "projection"), the energy and the
rotation angle (data keys named in the start document's ``txm_keys``). Rows arrive in
``seq_num`` order (the base class joins events and frames) and go, in that order, to the
streaming reducer `analysis.txm_reduction.TxmXanesAccumulator`, which holds all the
science (dark/flat sets, normalisation, registration, reconstruction, mask, white-line
fit, statistics; see its module notes). This callback only routes rows and publishes.

Every frame is checked by the reducer (its module notes, "Frames"): a bad frame, or a
flat or projection without signal, is skipped and the analysis goes on; an energy missing
a projection is left out of the white-line fit. Derived run streams: ``frame_quality``
(one row per frame that was skipped or had pixels masked: the raw seq_num, its
``frame_type``, its `analysis.frame_quality.FrameQuality` record, ``used`` and the
``reason`` if not; frames that are clean have no row), ``preview`` (per energy, when the reducer reports it complete: the
reconstructed central slice or the absorbance map), ``registration`` (per energy: shifts),
``whiteline`` (one event: ``wl_eV`` volume, NaN outside the mask; ``mask``;
``edge_jump``; centre) and ``statistics`` (one event: mean, median, sigma, counts,
histogram; ``n_energies_incomplete``: energies left out). Live values: ``wl_sigma_eV``, ``wl_mean_eV``, ``energies_done``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..analysis.frame_quality import FrameQuality
from ..analysis.txm_reduction import EnergyPreview, TxmXanesAccumulator, XanesOptions, XanesReduction
from ..schema.start import TXM
from .derived import AnalysisCallback


def quality_row(seq_num: int, kind: str, quality: FrameQuality, used: bool, reason: str) -> dict[str, Any] | None:
    """The ``frame_quality`` row of raw frame ``seq_num`` of ``kind``: one for a frame
    skipped or with pixels masked (non-finite or saturated), None for a clean frame."""
    if used and not quality.n_nonfinite and not quality.n_saturated:
        return None
    return {"raw_seq_num": seq_num, "frame_type": kind, **quality.record(), "used": used, "reason": reason}


class TxmXanesCallback(AnalysisCallback):
    """TXM-XANES reduction of ``technique="txm"`` runs; see the module docstring.

    Keyword arguments: the fields of `analysis.txm_reduction.XanesOptions` (their
    meaning and defaults are documented there, the one home of both) and those of
    `AnalysisCallback` (``image_key``, ``stream``, ``frame_source``). `parameters` returns
    them (JSON-able, without the frame source), so ``TxmXanesCallback(**callback.parameters())``
    rebuilds the same analysis; the signature names them so that introspection
    (`from_parameters`, queue tools) sees them.
    """

    analysis = "txm_xanes"
    techniques = (TXM,)

    def __init__(
        self,
        smooth_voxels: float = XanesOptions.smooth_voxels,
        mask_erosion: int = XanesOptions.mask_erosion,
        denoise: bool = XanesOptions.denoise,
        registration_angles: int = XanesOptions.registration_angles,
        bins: int = XanesOptions.bins,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.options = XanesOptions(smooth_voxels, mask_erosion, denoise, registration_angles, bins)
        self.reducer: TxmXanesAccumulator | None = None
        self._adopted: tuple | None = None
        self.live_signal("wl_sigma_eV", float, math.nan)
        self.live_signal("wl_mean_eV", float, math.nan)
        self.live_signal("energies_done", int, 0)

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), **dataclasses.asdict(self.options)}

    def open_run(self, start: dict[str, Any]) -> None:
        self.keys = start["txm_keys"]
        self.voxel_um = float(start.get("pixel_size_um", math.nan))
        self.scan = (start["energies_eV"], start["angles_deg"], start["txm_mode"])
        TxmXanesAccumulator(*self.scan, self.options)  # refuses a scan it cannot reduce, at the start
        self.reducer = None  # built at the first frame: the camera's shape comes with the descriptor
        self._adopted = None

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        if self.reducer is None:
            self.reducer = TxmXanesAccumulator(*self.scan, self.options, frame_shape=self.frame_shape)
        kind = str(data[self.keys["frame_type"]])
        outcome = self.reducer.add(
            kind,
            frame,
            energy_eV=float(data[self.keys["energy"]]),
            angle_deg=float(data[self.keys["angle"]]),
        )
        row = quality_row(seq_num, kind, outcome.quality, outcome.used, outcome.reason)
        if row is not None:
            self.derived.event("frame_quality", row)
        if outcome.preview is not None:
            self._publish_preview(outcome.preview)
            self.set_live("energies_done", self.reducer.n_complete)

    def _publish_preview(self, preview: EnergyPreview) -> None:
        self.derived.event(
            "preview",
            {"energy_eV": preview.energy_eV, "energy_index": preview.energy_index,
             "center_px": preview.center_px, "image": preview.image},
        )

    def adopt(self, reduction: XanesReduction, previews: Sequence[EnergyPreview],
              quality_rows: Sequence[dict[str, Any]], n_incomplete: int) -> None:
        """Take, for the raw run in progress, the result of the block-wise reduction that
        `nanostrain.analyze_txm` ran on a cluster instead of the frames (the run is then
        replayed without them): at the raw stop, `finish` publishes ``quality_rows`` (as
        `quality_row` makes them), ``previews`` and ``reduction`` as it publishes the live
        reducer's. The reduction's volumes may be lazy (read from the store as they are
        written out, `callbacks.external_arrays.is_lazy_array`)."""
        self._adopted = (reduction, tuple(previews), tuple(quality_rows), n_incomplete)

    def finish(self) -> None:
        adopted, self._adopted = self._adopted, None
        if adopted is not None:
            result, previews, quality_rows, n_incomplete = adopted
            for row in quality_rows:
                self.derived.event("frame_quality", row)
            for preview in previews:
                self._publish_preview(preview)
            self.set_live("energies_done", len(previews))
        elif self.reducer is None:
            raise ValueError("the txm run recorded no frames")
        else:
            n_incomplete = self.reducer.n_incomplete
            result, self.reducer = self.reducer.result(), None
        self._publish_result(result, n_incomplete)

    def _publish_result(self, result: XanesReduction, n_incomplete: int) -> None:
        for energy, (rows, cols) in zip(result.energies_eV, result.shifts_px, strict=True):
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
                "reference_energy_eV": float(result.energies_eV[result.reference_index]),
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
                "n_energies": len(result.energies_eV),
                "n_energies_incomplete": n_incomplete,
                "n_pca_components": result.n_components,
                "counts": stats.counts,
                "bin_edges_eV": stats.bin_edges_eV,
            },
        )
        self.set_live("wl_sigma_eV", stats.sigma_eV)
        self.set_live("wl_mean_eV", stats.mean_eV)
