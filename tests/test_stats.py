"""Specification of the report's statistics: summaries, ranks, Welch's t-test and Holm–Bonferroni,
checked against values computed by hand (closed forms of Student's t for 1 and 2 degrees of freedom)."""

from __future__ import annotations

import math

import pytest

from seqsweep import stats


def p_two_dof(t: float) -> float:
    """Two-sided p of Student's t with 2 degrees of freedom: 1 - |t| / sqrt(2 + t^2)."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


def p_one_dof(t: float) -> float:
    """Two-sided p of Student's t with 1 degree of freedom (Cauchy): 1 - 2 atan(|t|) / pi."""
    return 1 - 2 * math.atan(abs(t)) / math.pi


def test_welch_p_matches_the_closed_form_for_two_degrees_of_freedom():
    # means 1 and 4, variances 2 and 2, n = 2 each: se = sqrt(2/2 + 2/2), t = -3/sqrt(2), Welch df = 2
    assert stats.welch_p([0, 2], [3, 5]) == pytest.approx(1 - 3 / math.sqrt(13), rel=1e-9)
    assert stats.welch_p([0, 2], [3, 5]) == pytest.approx(p_two_dof(-3 / math.sqrt(2)), rel=1e-9)


def test_welch_p_uses_unequal_variances_not_the_pooled_student_test():
    # variances 0 and 2: se = sqrt(0 + 2/2) = 1, t = 2, Welch df = 1 (Student's pooled test: df = 2)
    p = stats.welch_p([3, 3], [0, 2])
    assert p == pytest.approx(p_one_dof(2.0), rel=1e-9)
    assert p == pytest.approx(0.29516723, abs=1e-8)
    assert p != pytest.approx(p_two_dof(2.0), abs=1e-3)


def test_welch_p_with_no_spread_in_either_sample_is_decided_by_the_means():
    assert stats.welch_p([0.9, 0.9], [0.9, 0.9, 0.9]) == 1.0
    assert stats.welch_p([0.9, 0.9], [0.8, 0.8]) == 0.0


def test_welch_p_refuses_a_sample_of_one():
    with pytest.raises(ValueError, match="at least 2"):
        stats.welch_p([0.9], [0.8, 0.7])


def test_holm_multiplies_the_ith_smallest_p_by_m_minus_i_keeps_order_and_monotonicity():
    # sorted: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_caps_adjusted_p_values_at_one():
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]
    assert stats.holm([]) == []


def test_summary_of_one_value_has_undefined_std_never_zero():
    one = stats.summarise([0.9])
    assert (one.n, one.mean, one.std, one.min, one.max) == (1, 0.9, None, 0.9, 0.9)
    assert stats.summarise([]) == stats.Summary(0, None, None, None, None)
    two = stats.summarise([0.8, 0.9])
    assert two.std == pytest.approx(math.sqrt(0.005))  # sample std, ddof = 1


def test_ranks_are_competition_ranks_with_unfinished_configurations_last():
    s = {
        k: stats.summarise(v)
        for k, v in {
            "a": [0.75, 0.75],
            "b": [0.5, 1.0],
            "c": [1.0, 0.875],
            "d": [],
            "e": [0.25],
        }.items()
    }
    assert stats.ranks(s) == {"c": 1, "a": 2, "b": 2, "e": 4, "d": 5}
    # equal means: more repeats, then smaller std, decide which is "best"
    assert stats.best_of(s) == "c"
    tie = {"x": stats.summarise([0.75]), "y": stats.summarise([0.5, 1.0]), "z": stats.summarise([0.75, 0.75])}
    assert stats.best_of(tie) == "z"
    assert stats.best_of({"d": stats.summarise([])}) is None


def test_compare_to_best_applies_holm_over_all_tested_configurations():
    def p(diff):  # n = 2 per sample, both variances 2: t^2 = diff^2 / 2, df = 2
        t2 = diff * diff / 2
        return 1 - math.sqrt(t2 / (t2 + 2))

    samples = {"best": [10, 12], "x": [0, 2], "y": [3, 5], "w": [4, 6], "single": [7]}
    out = stats.compare_to_best(samples, "best", alpha=0.05)
    # raw p: x 0.0194 and y 0.0385 are below alpha, w 0.0513 is not ...
    assert out["x"].p_value == pytest.approx(p(10)) and p(10) < 0.05
    assert out["y"].p_value == pytest.approx(p(7)) and p(7) < 0.05
    assert out["w"].p_value == pytest.approx(p(6)) and p(6) > 0.05
    # ... but over m = 3 comparisons Holm gives x: 3 p(10), y: max(3 p(10), 2 p(7)), w: max(.., p(6))
    assert out["x"].p_holm == pytest.approx(3 * p(10))
    assert out["y"].p_holm == pytest.approx(2 * p(7))
    assert out["w"].p_holm == pytest.approx(2 * p(7))
    assert {k: c.verdict for k, c in out.items()} == {
        "best": stats.BEST,
        "x": stats.TIE,
        "y": stats.TIE,
        "w": stats.TIE,
        "single": stats.UNTESTABLE,
    }


def test_compare_to_best_marks_a_clearly_worse_configuration():
    out = stats.compare_to_best({"best": [10, 12], "x": [0, 2]}, "best", alpha=0.05)
    assert out["x"].verdict == stats.WORSE
    assert out["x"].p_holm == out["x"].p_value  # m = 1: nothing to correct


def test_nothing_can_be_tested_against_a_best_with_a_single_repeat():
    out = stats.compare_to_best({"best": [0.99], "x": [0.5, 0.6], "y": [0.4]}, "best", alpha=0.05)
    assert out["x"].verdict == stats.BEST_UNTESTABLE and out["x"].p_value is None
    assert out["y"].verdict == stats.UNTESTABLE
    assert stats.compare_to_best({"a": [], "b": []}, None, 0.05)["a"].verdict == stats.UNTESTABLE


def test_epoch_band_summarises_each_epoch_over_the_series_that_reach_it_and_skips_nan():
    band = stats.epoch_band([[1.0, 2.0], [3.0, 4.0, 5.0], [float("nan"), 6.0]])
    assert [b.n for b in band] == [2, 3, 1]
    assert band[0].mean == 2.0 and band[0].std == pytest.approx(math.sqrt(2))
    assert band[1].mean == 4.0 and band[1].std == pytest.approx(2.0)
    assert band[2].mean == 5.0 and band[2].std is None


def test_hedges_g_is_the_pooled_standardised_difference_with_the_small_sample_correction():
    # means 2 and 5, sample variances 1 and 1: pooled sd 1, d = -3, J = 1 - 3 / (4 * 6 - 9) = 0.8
    assert stats.hedges_g([1, 2, 3], [4, 5, 6]) == pytest.approx(-3 * 0.8)
    assert stats.hedges_g([1], [4, 5]) is None and stats.hedges_g([1, 1], [2, 2]) is None


def test_bootstrap_intervals_hold_the_estimate_are_reproducible_and_exclude_zero_only_for_a_real_gap():
    a = [0.90, 0.91, 0.89, 0.92, 0.90, 0.91, 0.88, 0.90, 0.91, 0.90]
    low, high = stats.mean_ci(a)
    assert low < sum(a) / len(a) < high and high - low < 0.03
    assert stats.mean_ci(a) == (low, high), "seeded: the same repeats give the same interval"
    assert stats.mean_ci([0.9]) is None and stats.mean_ci([0.5, 0.5]) == (0.5, 0.5)
    worse = [x - 0.05 for x in a]
    d_low, d_high = stats.diff_ci(worse, a)
    assert d_low < -0.05 + 1e-9 < d_high and d_high < 0, "a 5-point gap: the interval excludes 0"
    same_low, same_high = stats.diff_ci(a[::-1], a)
    assert same_low < 0 < same_high


def test_comparisons_with_the_best_carry_the_difference_its_interval_and_the_effect_size():
    samples = {"best": [0.9, 0.92, 0.91], "other": [0.8, 0.82, 0.81]}
    out = stats.compare_to_best(samples, "best", 0.05)
    other = out["other"]
    assert other.diff == pytest.approx(-0.1)
    assert other.diff_ci[0] <= other.diff <= other.diff_ci[1] < 0
    assert other.hedges_g == pytest.approx(stats.hedges_g(samples["other"], samples["best"]))
    assert out["best"].diff is None
