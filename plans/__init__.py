"""Bluesky plans of nanostrain, one module per technique, plus shared stubs."""

import inspect
from collections.abc import Callable

from .validation import PlanArgumentError


def registry() -> dict[str, Callable]:
    """Every public plan by name (what the profile puts in the session namespace)."""
    from .alignment import alignment_scan
    from .calibration import calibrate_xrd
    from .cycling import cycle_cell, gitt, operando_xrd
    from .samples import mount_sample
    from .sxdm import find_bragg_peak, sxdm_rocking_raster, xrf_map
    from .txm import energy_calibration, txm_xanes_2d, txm_xanes_tomo
    from .xas import xas_fly_scan, xas_scan

    return {"alignment_scan": alignment_scan, "operando_xrd": operando_xrd, "gitt": gitt, "cycle_cell": cycle_cell,
            "calibrate_xrd": calibrate_xrd,
            "sxdm_rocking_raster": sxdm_rocking_raster, "find_bragg_peak": find_bragg_peak, "xrf_map": xrf_map,
            "txm_xanes_2d": txm_xanes_2d, "txm_xanes_tomo": txm_xanes_tomo, "energy_calibration": energy_calibration,
            "mount_sample": mount_sample, "xas_scan": xas_scan, "xas_fly_scan": xas_fly_scan}


def validate(plan_name: str, /, *args, **kwargs) -> None:
    """Run the checks plan ``plan_name`` of `registry` runs with these arguments before its
    first message, without a RunEngine and without moving anything: the plan's generator
    is advanced to its first message, which is discarded, and closed.

    Raises `PlanArgumentError` for an unknown plan, arguments that do not bind to its
    signature, or whatever the plan itself refuses (out of range, inconsistent);
    `nanostrain.schema.start.StartDocumentError` for an ``md`` that would replace a key
    the analysis reads. Checks that need the devices' live state (an axis's soft limits,
    read by a message) are left to the run.
    """
    plans = registry()
    if plan_name not in plans:
        raise PlanArgumentError(f"unknown plan {plan_name!r}; known: {sorted(plans)}.")
    plan = plans[plan_name]
    try:
        inspect.signature(plan).bind(*args, **kwargs)
    except TypeError as error:
        raise PlanArgumentError(f"{plan_name}: {error}") from None
    generator = plan(*args, **kwargs)
    try:
        next(generator)
    except StopIteration:
        pass
    finally:
        generator.close()
