"""Geometry refinement from a simulated CeO2 frame with a known geometry."""

from __future__ import annotations

import numpy as np
import pytest

from nanostrain.analysis.xrd import perkinelmer_geometry
from nanostrain.analysis.xrd_calibration import calibrate_geometry
from nanostrain.sim.powder import PowderRenderer


@pytest.fixture(scope="module")
def ceo2():
    truth = perkinelmer_geometry(binning=2)
    return truth, PowderRenderer(truth).render_calibrant(1.0, np.random.default_rng(0))


def test_distance_and_beam_centre_are_recovered_from_a_2_percent_wrong_start(ceo2):
    truth, image = ceo2
    start = perkinelmer_geometry(binning=2)
    start.dist, start.poni1, start.poni2 = truth.dist * 1.02, truth.poni1 + 8e-4, truth.poni2 - 6e-4
    result = calibrate_geometry(image, start)
    assert result.geometry.dist == pytest.approx(truth.dist, abs=1e-4)  # 0.1 mm of 1.5 m
    assert result.geometry.poni1 == pytest.approx(truth.poni1, abs=2e-5)  # 1/20 pixel
    assert result.geometry.poni2 == pytest.approx(truth.poni2, abs=2e-5)
    assert result.rms_2theta_deg < 0.002 and result.n_rings >= 5


def test_an_image_without_rings_is_refused(ceo2):
    truth, _ = ceo2
    flat = np.random.default_rng(1).poisson(50, size=truth.detector.shape).astype(np.float32)
    with pytest.raises(ValueError, match="rings found|do not fit a geometry"):
        calibrate_geometry(flat, truth)
