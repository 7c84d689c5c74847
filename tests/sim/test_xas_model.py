"""The XAS forward model: bond lengths and disorder follow valence and ageing; the
ensemble EXAFS of a sharp shell is the textbook single-scattering equation."""

from __future__ import annotations

import numpy as np
import pytest

from nanostrain.analysis.xas import NI_O_FEFF_PATH, read_feff_path
from nanostrain.schema.sample import SampleRecord
from nanostrain.sim.xas_model import XasSpecimen, electrode_specimen, shell_parameters


def test_ni_o_bond_contracts_on_oxidation_and_fatigue():
    bond, sigma2 = shell_parameters([2.0, 3.0, 4.0], "NC91", 0)
    assert bond == pytest.approx([2.055, 1.965, 1.875])
    assert sigma2 == pytest.approx([0.004, 0.006, 0.004])  # the Jahn-Teller disorder of Ni3+
    for material in ("NC91", "NM91"):
        aged_bond, aged_sigma2 = shell_parameters([3.0], material, 100)
        assert aged_bond[0] < 1.965 and aged_sigma2[0] > 0.006
    rise = {m: shell_parameters([3.0], m, 100)[1][0] - 0.006 for m in ("NC91", "NM91")}
    assert rise["NM91"] > 3 * rise["NC91"]
    with pytest.raises(ValueError, match="no XAS model"):
        shell_parameters([3.0], "LCO", 0)


def test_sharp_shell_chi_is_the_single_scattering_equation():
    # sigma^2 -> 0 at R = R_eff: chi = N S0^2 |f| / (k R^2) exp(-2R/lambda) sin(2kR + delta)
    table = read_feff_path(NI_O_FEFF_PATH)
    reff = float(table["reff"])
    specimen = XasSpecimen(np.array([3.0]), np.array([1.0]), np.array([reff]), np.array([1e-12]))
    k = table["k"][10:60]
    expected = (6 * 0.8 * table["mag"][10:60] * table["red_factor"][10:60] / (k * reff**2)
                * np.exp(-2 * reff / table["lambda"][10:60]) * np.sin(2 * k * reff + table["phc2"][10:60]
                                                                      + table["phase"][10:60]))
    np.testing.assert_allclose(specimen.chi(k, 0), expected, atol=1e-9)
    assert table["degen"] == 6 and reff == pytest.approx(1.97)


def test_charged_nm91_front_widens_the_bond_distribution():
    # the reaction front (H3 shell over an H2 core) spreads the shells' valence and R
    nm91 = electrode_specimen(SampleRecord(name="x", material="NM91", morphology="SC", charge_V=4.3,
                                           current_mA_g=200.0))
    nc91 = electrode_specimen(SampleRecord(name="y", material="NC91", morphology="SC", charge_V=4.3,
                                           current_mA_g=200.0))
    spread = {s.name: s.sigma2_A2 - float(np.sum(s.weights * s.sigma2_shell_A2)) for s in (nm91, nc91)}
    assert spread["x"] > 10 * spread["y"]
    assert nm91.bond_length_A < 1.95 and nc91.bond_length_A < 1.95  # charged: Ni3.6+ and beyond
