"""The start-document contract between plans (which write it) and analyses (which read it).

A raw run's start document names its ``technique`` and records everything its live
analysis needs, so a replay needs nothing but the catalog. `TECHNIQUES` lists, per
technique, the keys a plan must record; `start_metadata` builds a plan's metadata and
refuses a missing key, `require_start` gives an analysis a clear error for a run that
lacks one. Derived runs record `DERIVED_KEYS`.

Units follow DESIGN.md: energies in eV, angles in degrees, lengths in angstrom, scanner
positions in um, masses in g.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

XRD = "xrd"
XRD_CALIBRATION = "xrd_calibration"
ELECTROCHEMISTRY = "electrochemistry"
SXDM = "sxdm"
SXDM_ROCKING_CURVE = "sxdm_rocking_curve"
XRF_MAP = "xrf_map"
TXM = "txm"
TXM_ENERGY_CALIBRATION = "txm_energy_calibration"
ALIGNMENT = "alignment"
XAS = "xas"

TECHNIQUES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    # operando powder diffraction: frames + the cycler's echem stream
    XRD: ("image_key", "xrd_geometry", "active_mass_g", "echem_keys"),
    # one calibrant frame; the geometry to start refining from
    XRD_CALIBRATION: ("image_key", "xrd_geometry", "calibrant"),
    # cycling without frames (gitt, cycle_cell)
    ELECTROCHEMISTRY: ("active_mass_g", "echem_keys"),
    # rocking rasters: the 5D dataset
    # the geometry (`SxdmGeometry.to_metadata`, energy in eV), the angles, the raster and
    # the background / ROI the analysis subtracts and crops
    SXDM: ("image_key", "sxdm_geometry", "sxdm_thetas_deg", "sxdm_raster", "sxdm_background", "sxdm_roi"),
    SXDM_ROCKING_CURVE: ("image_key",),
    # the fluorescence raster (shape, step, ranges, order) its counts are read on
    XRF_MAP: ("xrf_raster",),
    # full-field XANES (tomography or 2D)
    TXM: ("image_key", "txm_mode", "energies_eV", "angles_deg", "txm_keys"),
    TXM_ENERGY_CALIBRATION: ("image_key", "energies_eV", "reference_edge_eV"),
    ALIGNMENT: ("image_key",),
    # ex situ XAS in transmission: the planned energies, E0 (k origin), the reference
    # foil's tabulated edge (energy alignment), the data keys of energy, I0, It, Iref
    XAS: ("energies_eV", "e0_eV", "reference_edge_eV", "xas_keys"),
})
"""Required start-document keys per technique (besides ``technique`` and ``plan_name``)."""

DERIVED_KEYS = ("derived_from", "analysis", "analysis_version", "parameters", "purpose")
"""What every derived run's start document records: the raw run's uid, the analysis's
name and version, the parameters it ran with (enough to rebuild it), ``purpose="derived"``."""


class StartDocumentError(ValueError):
    """A start document lacks what its technique's analysis needs."""


def missing_keys(doc: Mapping[str, Any], technique: str) -> list[str]:
    """Required keys of ``technique`` that ``doc`` lacks (ValueError for an unknown technique)."""
    if technique not in TECHNIQUES:
        raise ValueError(f"unknown technique {technique!r}; known: {sorted(TECHNIQUES)}")
    return [key for key in TECHNIQUES[technique] if key not in doc]


def start_metadata(technique: str, plan_name: str, md: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A plan's start metadata: ``technique``, ``plan_name``, ``fields``, then the user's ``md``
    (which may add keys but not replace the contract's). Raises `StartDocumentError` if a
    required key is missing."""
    metadata = {"technique": technique, "plan_name": plan_name, **fields}
    clashes = sorted(set(md or {}) & (set(TECHNIQUES.get(technique, ())) | {"technique", "plan_name"}))
    if clashes:
        raise StartDocumentError(f"md may not replace {clashes}: the {technique} analysis reads them")
    metadata.update(md or {})
    missing = missing_keys(metadata, technique)
    if missing:
        raise StartDocumentError(f"a {technique} run must record {missing} in its start document")
    return metadata


def require_start(doc: Mapping[str, Any], technique: str | None = None) -> None:
    """Raise `StartDocumentError` naming what the run of ``technique`` (default: the one
    the document names) lacks."""
    technique = technique or doc.get("technique")
    if technique is None:
        raise StartDocumentError("the start document names no technique")
    missing = missing_keys(doc, technique)
    if missing:
        raise StartDocumentError(
            f"run {doc.get('uid', '?')} ({technique}) lacks {missing} in its start document"
        )
