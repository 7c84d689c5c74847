"""The alignment bench's beam spot: where it sits and how bright it is (known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nanostrain.sim.beam_spot import BeamSpot


@pytest.mark.parametrize("x_mm", [-1.0, 0.0, 0.7])
def test_the_spot_centroid_follows_the_stage(x_mm):
    spot = BeamSpot(background_rate=0.0)
    frame = spot.frame(x_mm, flux_fraction=1.0, exposure_s=10.0).astype(float)

    cols = np.arange(frame.shape[1])
    centroid_col = (frame.sum(axis=0) * cols).sum() / frame.sum()

    assert spot.spot_col(x_mm) == 48.0 + 20.0 * x_mm
    assert centroid_col == pytest.approx(spot.spot_col(x_mm), abs=0.02)


def test_the_counts_are_the_gaussian_integral_scaled_by_flux_and_exposure():
    spot = BeamSpot(background_rate=0.0, spot_px=3.0, peak_rate=2e4)

    total = spot.frame(0.0, flux_fraction=0.5, exposure_s=2.0).sum()

    expected = 2e4 * 0.5 * 2.0 * 2 * math.pi * 3.0**2  # peak rate x f x t x 2 pi s^2
    assert total == pytest.approx(expected, rel=5e-3)  # Poisson: ~1e6 counts, 0.1 % noise


def test_without_beam_only_the_background_is_counted():
    frame = BeamSpot(background_rate=50.0).frame(0.0, flux_fraction=0.0, exposure_s=1.0)

    assert frame.dtype == np.uint32
    assert frame.mean() == pytest.approx(50.0, rel=0.02)
