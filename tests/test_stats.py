"""Rank correlations against hand-computed values."""

from __future__ import annotations

import math

import pytest

from effscope.stats import kendall_tau, quantile_interval, spearman_rho


def test_perfect_and_reversed():
    assert spearman_rho([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_hand_computed():
    # pairs: (1,2)(1,3)(1,4)(2,3)(2,4)(3,4) over y = [1, 3, 2, 4]: one discordant pair (2,3) -> tau = (5-1)/6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # rank differences d = [0, 1, -1, 0] -> rho = 1 - 6*2/(4*15) = 0.8
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_ties_use_tau_b_and_average_ranks():
    # x has one tied pair: n0 = 6, n1 = 1, n2 = 0; concordant 5, discordant 0 -> 5 / sqrt(5 * 6)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert spearman_rho([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)


def test_degenerate_inputs_are_nan_not_zero():
    assert math.isnan(spearman_rho([1], [2]))
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        spearman_rho([1, 2], [1])


@pytest.mark.parametrize("q,n", [(0.5, 6), (0.9, 36), (0.99, 368), (0.1, 36)])
def test_the_fewest_samples_for_an_interval_are_as_documented(q, n):
    """Below these counts a profile's interval is the samples' range (docs: 6 for a median, 36 for p90, 368 for p99)."""
    assert quantile_interval(range(n - 1), q) is None and quantile_interval(range(n), q) is not None
