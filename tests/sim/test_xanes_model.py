"""Known-answer tests of the model Ni K-edge XANES spectrum (its maximum is the WL energy)."""

import numpy as np
import pytest

from nanostrain.sim.xanes_model import ni_k_edge_xanes

ENERGIES = np.arange(8340.0, 8361.0)


@pytest.mark.parametrize("lorentz_fraction", [0.0, 0.5, 1.0])
def test_model_maximum_is_at_the_given_whiteline_energy(lorentz_fraction):
    fine = np.linspace(8340.0, 8360.0, 200001)
    mu = ni_k_edge_xanes(fine, [8348.3, 8351.7], lorentz_fraction=lorentz_fraction)
    assert fine[np.argmax(mu, axis=-1)] == pytest.approx([8348.3, 8351.7], abs=2e-4)


def test_model_shifts_rigidly_with_the_white_line():
    shifted = ni_k_edge_xanes(ENERGIES, 8351.3)
    np.testing.assert_allclose(shifted, ni_k_edge_xanes(ENERGIES - 1.3, 8350.0), atol=1e-12)


def test_model_rejects_a_white_line_too_weak_for_a_maximum():
    with pytest.raises(ValueError, match="no maximum"):
        ni_k_edge_xanes(ENERGIES, 8350.0, wl_amplitude=0.01)
