"""Fixtures shared by the XRD reduction and refinement tests: the simulated panel, its
frame renderer and the reduction's integrator."""

from __future__ import annotations

import pytest

from nanostrain.analysis.xrd import perkinelmer_geometry
from nanostrain.analysis.xrd_reduction import reduction_integrator
from nanostrain.sim.powder import PowderRenderer


@pytest.fixture(scope="module")
def geometry():
    """PerkinElmer binned 2x (1024 x 1024, 400 um) at 1.5 m, 0.1665 A (11-ID-C)."""
    return perkinelmer_geometry(1.5, 0.1665, binning=2)


@pytest.fixture(scope="module")
def renderer(geometry):
    return PowderRenderer(geometry)


@pytest.fixture(scope="module")
def integrator(geometry):
    return reduction_integrator(geometry)
