"""Known-answer tests of nanostrain.analysis.strain (eq. 1)."""

from __future__ import annotations

import numpy as np
import pytest

from nanostrain.analysis.strain import strain

pytestmark = pytest.mark.filterwarnings("error")


def test_strain_is_the_relative_change_of_d():
    # c of a charged NC91 cell, 6.0 % below pristine (SCIENCE.md)
    assert strain(14.2 * 0.94, 14.2) == pytest.approx(-0.06, rel=1e-12)


def test_strain_broadcasts_over_d_and_d0():
    d = np.array([[4.70, 4.73], [4.76, 4.80]])
    expected = (d - np.array([4.73, 4.75])) / np.array([4.73, 4.75])
    np.testing.assert_allclose(strain(d, [4.73, 4.75]), expected, rtol=1e-12)


def test_strain_rejects_a_non_positive_reference():
    with pytest.raises(ValueError, match="d0"):
        strain([4.7], [0.0])


def test_contraction_and_shrinkage_over_a_run_know_their_answers():
    from nanostrain.analysis.strain import contraction_pct, shrinkage_from_first_pct

    assert contraction_pct([14.2, np.nan, 14.5, 13.63]) == pytest.approx(100 * (14.5 - 13.63) / 14.5)
    assert shrinkage_from_first_pct([np.nan, 100.0, 101.0, 92.2]) == pytest.approx(7.8)
    assert np.isnan(contraction_pct([np.nan])) and np.isnan(shrinkage_from_first_pct([]))
