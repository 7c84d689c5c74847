"""Bluesky plans of nanostrain, one module per technique, plus shared stubs."""

from __future__ import annotations

from collections.abc import Callable


def registry() -> dict[str, Callable]:
    """Every public plan by name (what the profile puts in the session namespace)."""
    from .alignment import alignment_scan
    from .calibration import calibrate_xrd
    from .cycling import gitt, operando_xrd
    from .samples import mount_sample
    from .sxdm import find_bragg_peak, sxdm_rocking_raster, xrf_map
    from .txm import energy_calibration, txm_xanes_2d, txm_xanes_tomo

    return {"alignment_scan": alignment_scan, "operando_xrd": operando_xrd, "gitt": gitt, "calibrate_xrd": calibrate_xrd,
            "sxdm_rocking_raster": sxdm_rocking_raster, "find_bragg_peak": find_bragg_peak, "xrf_map": xrf_map,
            "txm_xanes_2d": txm_xanes_2d, "txm_xanes_tomo": txm_xanes_tomo, "energy_calibration": energy_calibration,
            "mount_sample": mount_sample}
