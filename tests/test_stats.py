"""kd.stats: each rule of the verdict protocol on constructed data."""
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as sps

from kd import stats


def test_paired_test_finds_what_welch_misses():
    # a large seed effect shared by both methods, and a small consistent gain of the first
    seed_effect = np.array([60.0, 65.0, 70.0, 75.0, 80.0])
    a = seed_effect + np.array([0.9, 1.1, 1.0, 0.8, 1.2])
    b = seed_effect
    welch = sps.ttest_ind(a, b, equal_var=False).pvalue
    assert welch > 0.5, "unpaired, the gain drowns in the seed effect"
    r = stats.compare(a, b)
    assert r["verdict"] == "reproduced" and r["p"] < 1e-3
    assert r["test"] == "paired t" and r["n"] == 5
    assert r["difference"] == pytest.approx(1.0)
    d = a - b
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert r["ci"] == pytest.approx([1.0 - half, 1.0 + half])
    assert r["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)


def test_verdicts_agree_with_the_confidence_interval():
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = rng.normal(70, 2, 5)
        a = b + rng.normal(rng.normal(0, 1), 0.8, 5)
        r = stats.compare(a, b)
        lo, hi = r["ci"]
        expected = "reproduced" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
        assert r["verdict"] == expected, (lo, hi, r)


def test_contradicted_and_lower_is_better():
    better, worse = [70.0, 71.0, 72.0, 73.0], [71.0, 72.2, 72.9, 74.1]
    assert stats.compare(better, worse)["verdict"] == "contradicted"
    assert stats.compare(better, worse, higher_is_better=False)["verdict"] == "reproduced"


def test_fewer_than_three_seeds_is_not_tested():
    one = stats.compare([72.0], [60.0])
    assert one["verdict"] == "not tested" and one["n"] == 1 and math.isnan(one["p"])
    two = stats.compare([72.0, 73.0], [60.0, 61.5])
    assert two["verdict"] == "not tested" and "not tested" in two["evidence"]


def test_pairs_by_seed_dicts_and_rejects_mismatched_seeds():
    r = stats.compare({2: 71.0, 0: 70.0, 1: 72.5}, {0: 69.0, 1: 71.0, 2: 70.2})
    assert r["difference"] == pytest.approx(np.mean([1.0, 1.5, 0.8]))
    with pytest.raises(ValueError, match="same seeds"):
        stats.compare({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 3: 3.0})
    with pytest.raises(ValueError, match="one value per seed"):
        stats.compare([1.0, 2.0, 3.0], [1.0, 2.0])


def test_equivalence_by_tost():
    b = np.array([70.0, 71.0, 69.5, 70.5, 70.2, 69.8])
    same = b + np.array([0.05, -0.1, 0.08, -0.02, 0.0, 0.04])
    r = stats.compare(same, b, claim="equivalent", margin=0.5)
    assert r["verdict"] == "reproduced" and "TOST" in r["test"]
    # no difference shown, but too noisy to show equivalence either: inconclusive, never "reproduced"
    noisy = b + np.array([1.5, -1.2, 0.9, -1.4, 1.1, -0.8])
    assert stats.compare(noisy, b, claim="equivalent", margin=0.5)["verdict"] == "inconclusive"
    assert stats.compare(noisy, b)["verdict"] == "inconclusive"
    far = b + np.array([2.0, 2.1, 1.9, 2.05, 1.95, 2.0])
    assert stats.compare(far, b, claim="equivalent", margin=0.5)["verdict"] == "contradicted"
    with pytest.raises(ValueError, match="positive margin"):
        stats.compare(same, b, claim="equivalent")


def test_one_sided_no_effect_claims():
    b = np.array([70.0, 71.0, 69.5, 70.5, 70.2])
    # "a does not beat b": a is a bit worse -> reproduced; a clearly better -> contradicted
    worse = b - np.array([0.3, 0.2, 0.4, 0.3, 0.25])
    assert stats.compare(worse, b, claim="not_better", margin=0.5)["verdict"] == "reproduced"
    much_better = b + np.array([2.0, 2.2, 1.8, 2.1, 1.9])
    assert stats.compare(much_better, b, claim="not_better", margin=0.5)["verdict"] == "contradicted"
    # "a is as good as b": within the margin -> reproduced; far worse -> contradicted
    assert stats.compare(worse, b, claim="not_worse", margin=0.5)["verdict"] == "reproduced"
    assert stats.compare(b - 2.0 + 0.01 * np.arange(5), b, claim="not_worse", margin=0.5)["verdict"] == "contradicted"


def test_the_two_false_trends_are_not_reproduced():
    # kd.report.trend once called these "reproduced": scipy's asymptotic Spearman p is 0 for a
    # perfect order of 3 or 4 points; the exact one-sided p-values are 1/6 and 1/24
    three = stats.trend([1, 2, 3], [0.271, 0.300, 0.312])
    assert three["p_one_sided"] == pytest.approx(float(Fraction(1, 6)))
    four = stats.trend([0, 1, 2, 3], [0.0061, 0.0043, 0.0037, -0.0018], increasing=False)
    assert four["p_one_sided"] == pytest.approx(float(Fraction(1, 24)))
    assert "exact" in four["test"]
    # with a tie (two generations at 0.004) two of the 24 orderings reach the observed rho
    tied = stats.trend([0, 1, 2, 3], [0.006, 0.004, 0.004, -0.002], increasing=False)
    assert tied["p_one_sided"] == pytest.approx(float(Fraction(2, 24)))
    assert three["verdict"] == four["verdict"] == "not tested"


def test_trend_with_seeds_permutes_within_seeds():
    levels = np.repeat([0, 1, 2, 3], 3)
    seeds = np.tile([0, 1, 2], 4)
    seed_effect = np.array([0.0, 5.0, -5.0])[seeds]
    y = 70 + 0.5 * levels + seed_effect + np.array([0.1, -0.1, 0.05] * 4)
    up = stats.trend(levels, y, seeds)
    assert up["verdict"] == "reproduced" and "within seeds" in up["test"] and up["p_one_sided"] < 0.01
    assert stats.trend(levels, y, seeds, increasing=False)["verdict"] == "contradicted"
    flat = stats.trend(levels, 70 + seed_effect + np.array([0.1, -0.1, 0.05, -0.05] * 3), seeds)
    assert flat["verdict"] == "inconclusive"
    assert up["slope"] == pytest.approx(0.5, abs=0.05) and up["slope_ci"][0] < 0.5 < up["slope_ci"][1]


def test_trend_monte_carlo_when_too_many_orderings():
    x = np.repeat(np.arange(6), 3)
    y = x + np.tile([0.0, 0.3, -0.2], 6)
    r = stats.trend(x, y, np.tile([0, 1, 2], 6), permutations=2000)
    assert "Monte Carlo" in r["test"] and r["verdict"] == "reproduced"
    assert r["p_one_sided"] == pytest.approx(1 / 2001)


def test_any_better_holm_over_candidates_and_intersection_union_against():
    """"Some candidate beats the reference": one clear winner among noise is reproduced (its Holm-adjusted
    p is the support); a reference not worse than any candidate is contradicted; the support is the Holm
    adjustment of the candidates' own paired tests."""
    ref = np.array([70.0, 71.0, 72.0, 73.0, 74.0])
    rng = np.random.default_rng(0)
    noise = {f"c{k}": ref + rng.normal(0, 0.5, 5) for k in range(3)}
    r = stats.any_better({**noise, "winner": ref + np.array([1.9, 2.1, 2.0, 1.8, 2.2])}, ref, margin=0.5)
    assert r["verdict"] == "reproduced" and r["best"] == "winner" and r["n"] == 5
    singles = [stats.compare(v, ref)["p_support"] for v in [*noise.values(), ref + np.array([1.9, 2.1, 2.0, 1.8, 2.2])]]
    assert r["p_support"] == pytest.approx(min(stats.holm(singles)))
    assert r["difference"] == pytest.approx(2.0) and r["ci"][0] > 0
    worse = {f"w{k}": ref - 2 + rng.normal(0, 0.3, 5) for k in range(3)}
    assert stats.any_better(worse, ref, margin=0.5)["verdict"] == "contradicted"
    mixed = {"w": ref - 2 + rng.normal(0, 0.3, 5), "noisy": ref + rng.normal(0, 3, 5)}
    assert stats.any_better(mixed, ref, margin=0.5)["verdict"] == "inconclusive"
    assert stats.any_better({"a": [72.0]}, [70.0], margin=0.5)["verdict"] == "not tested"
    with pytest.raises(ValueError, match="at least one candidate"):
        stats.any_better({}, ref, margin=0.5)


def test_identity_is_a_check_not_a_t_test():
    ok = stats.check(7.9e-15, 1e-6)
    assert ok["verdict"] == "reproduced" and ok["p"] is None and ok["claim_kind"] == "check"
    assert stats.check(2e-6, 1e-6)["verdict"] == "contradicted"
    assert stats.check(6.2, 5.0, what="spread", at_least=True)["verdict"] == "reproduced"
    assert stats.check(4.2, 5.0, what="spread", at_least=True)["verdict"] == "contradicted"


def test_holm():
    p = [0.01, 0.04, 0.03, None, 0.005]
    adj = stats.holm(p)
    assert adj[3] is None
    assert adj[4] == pytest.approx(0.02) and adj[0] == pytest.approx(0.03)
    assert adj[2] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06)
    r = stats.compare([71.0, 72.0, 71.5, 72.2], [70.0, 70.4, 70.9, 70.1])
    assert r["verdict"] == "reproduced"
    assert stats.adjusted_verdict(r, 0.2) == "inconclusive"
    assert stats.adjusted_verdict(r, 0.01) == "reproduced"
    assert stats.adjusted_verdict(stats.check(1.0, 0.5), None) == "contradicted"


def test_power():
    assert stats.power_paired(1.0, 1.0, 5) == pytest.approx(0.4013, abs=2e-3)  # noncentral t, two-sided
    assert stats.power_paired(1.0, 1.0, 20) > 0.95
    assert stats.power_paired(1.0, 0.0, 5) == pytest.approx(0.05, abs=1e-6)
