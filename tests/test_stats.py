"""Summary statistics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from mce.experiment.stats import fmt, fmt_p, paired_difference, summarize

T_975_DF3 = 3.182446305284263  # Student t quantile 0.975 with 3 degrees of freedom (tables: 3.182)
T_975_DF2 = 4.302652729749464  # ... with 2 degrees of freedom (tables: 4.303)


def test_mean_std_and_t_interval_by_hand():
    # values 1, 2, 3, 4: mean 2.5, sample variance 5/3, half width t * s / sqrt(4)
    result = summarize([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt(5.0 / 3.0)
    half = T_975_DF3 * std / 2.0
    assert result.n == 4
    assert result.mean == pytest.approx(2.5)
    assert result.std == pytest.approx(std)
    assert (result.ci_low, result.ci_high) == pytest.approx((2.5 - half, 2.5 + half))
    assert (result.ci_low, result.ci_high) == pytest.approx((0.44574, 4.55426), abs=1e-5)
    assert result.text() == "2.50 ± 1.29 [0.45, 4.55]"


def test_paired_difference_interval_and_p_value_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = sqrt 12 with 2 degrees of freedom;
    # the t(2) distribution has the closed form p = 1 - t / sqrt(2 + t^2) = 1 - sqrt(12 / 14)
    result = paired_difference([5.0, 7.0, 9.0], [4.0, 5.0, 6.0])
    half = T_975_DF2 / math.sqrt(3.0)
    assert result.n == 3 and result.mean == pytest.approx(2.0) and result.std == pytest.approx(1.0)
    assert (result.ci_low, result.ci_high) == pytest.approx((2.0 - half, 2.0 + half))
    assert result.p_value == pytest.approx(1.0 - math.sqrt(12.0 / 14.0))
    assert result.text() == "+2.00 [-0.48, 4.48], p=0.074"


def test_a_single_value_has_no_spread_and_no_interval():
    single = summarize([61.5])
    assert single.n == 1 and single.mean == 61.5
    assert math.isnan(single.std) and math.isnan(single.ci_low) and math.isnan(single.ci_high)
    assert single.text() == "61.50 ± n/a [n/a, n/a]"
    assert single.to_dict() == {
        "n": 1,
        "mean": 61.5,
        "std": None,
        "ci_low": None,
        "ci_high": None,
        "confidence": 0.95,
    }
    paired = paired_difference([3.0], [1.0])
    assert paired.mean == 2.0 and math.isnan(paired.p_value)
    assert paired.text() == "+2.00 [n/a, n/a], p=n/a"


def test_constant_differences_give_a_point_interval_and_a_defined_p():
    same = paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (same.mean, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    shifted = paired_difference([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert (shifted.ci_low, shifted.ci_high, shifted.p_value) == (1.0, 1.0, 0.0)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        summarize([1.0, 2.0], confidence=1.0)
    assert math.isnan(summarize([]).mean)


def test_formatting():
    assert fmt(math.nan) == "n/a" and fmt(1.234, 1) == "1.2" and fmt(1.0, 2, "+") == "+1.00"
    assert fmt_p(0.0001) == "<0.001" and fmt_p(0.04321) == "0.043" and fmt_p(math.nan) == "n/a"


def test_readable_clips_to_the_range_and_hides_intervals_under_three_values():
    near_top = summarize([99.0, 100.0, 100.0])  # t interval [98.1, 101.2]
    assert near_top.ci_high > 100.0
    shown = near_top.readable(0.0, 100.0)
    assert shown.ci_high == 100.0 and shown.ci_low == pytest.approx(near_top.ci_low)
    assert (shown.n, shown.mean, shown.std) == (near_top.n, near_top.mean, near_top.std)
    two = summarize([10.0, 90.0])  # t(1) interval: 50 +- 508
    assert two.ci_low < -400.0
    assert two.readable(0.0, 100.0).text() == "50.00 ± 56.57 [n/a, n/a]"
    # differences 1 and 4: t = 2.5 / (sd / sqrt 2) = 5 / 3; t(1) is Cauchy: p = 1 - 2 atan(t) / pi
    difference = paired_difference([5.0, 9.0], [4.0, 5.0]).readable(-100.0, 100.0)
    p = 1.0 - 2.0 * math.atan(5.0 / 3.0) / math.pi
    assert difference.text() == f"+2.50 [n/a, n/a], p={p:.3f}"
