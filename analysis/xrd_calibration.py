"""Detector geometry from a calibrant image (CeO2, SRM 674b), with pyFAI's refinement.

pyFAI does the work (ring extraction on the image by massif search, least-squares
refinement of the PONI parameters); this module only runs its standard recipe with the
conventions of nanostrain (angstrom, a starting geometry near the truth) and reports how
well the refined geometry explains the rings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyFAI.calibrant import get_calibrant
from pyFAI.geometry import Geometry
from pyFAI.goniometer import SingleGeometry


@dataclass(frozen=True)
class Calibration:
    """A refined geometry: ``geometry`` (pyFAI AzimuthalIntegrator), ``rms_2theta_deg``
    (root-mean-square 2theta residual of the control points, degrees), ``n_points``
    and ``n_rings`` used."""

    geometry: Geometry
    rms_2theta_deg: float
    n_points: int
    n_rings: int


def calibrate_geometry(
    image: np.ndarray,
    initial: Geometry,
    calibrant: str = "CeO2",
    max_rings: int = 8,
    refine: tuple[str, ...] = ("dist", "poni1", "poni2"),
    passes: int = 3,
    max_rms_deg: float = 0.02,
) -> Calibration:
    """Refine the ``refine`` parameters of ``initial`` (default distance and beam centre;
    add "rot1", "rot2" for a tilted panel) against the rings of ``calibrant`` in ``image``;
    the wavelength is taken as known (from the monochromator).

    Residual: for every control point p on ring k, 2theta_calc(p) - 2theta_k, with
    2theta_k = 2 arcsin(lambda / (2 d_k)); the refinement minimises their sum of squares.
    Raises ValueError if fewer than 3 rings are found, or if the refined geometry leaves
    an rms residual above ``max_rms_deg`` (degrees 2theta): no calibrant rings in the
    image (wrong sample, beam off) or a starting geometry too far off.
    """
    reference = get_calibrant(calibrant)
    reference.wavelength = initial.wavelength
    fixed = [p for p in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength") if p not in refine]
    geometry = initial
    # Rings are assigned from the current geometry: refine, then assign again from the
    # refined geometry (a 2 % starting error in distance can put points on a wrong ring).
    for _ in range(passes):
        single = SingleGeometry(
            "calibration", image=np.asarray(image, dtype=np.float32), calibrant=reference,
            detector=initial.detector, geometry=geometry,
        )
        single.extract_cp(max_rings=max_rings)
        points = np.asarray(single.control_points.getListRing(), dtype=float).reshape(-1, 3)  # (row, col, ring)
        rings = set(points[:, 2].astype(int).tolist())
        if len(rings) < 3:
            raise ValueError(f"only {len(rings)} {calibrant} rings found in the image; need at least 3")
        single.geometry_refinement.refine3(fix=fixed)
        geometry = single.get_ai()
    refined = geometry
    two_theta = refined.tth(points[:, 0], points[:, 1])
    expected = np.asarray(reference.get_2th())[points[:, 2].astype(int)]
    rms = float(np.degrees(np.sqrt(np.mean((two_theta - expected) ** 2))))
    if rms > max_rms_deg:
        raise ValueError(f"the {calibrant} rings found do not fit a geometry (rms {rms:.3g} deg > {max_rms_deg} deg)")
    return Calibration(refined, rms, int(len(points)), len(rings))
