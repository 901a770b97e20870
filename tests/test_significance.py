"""The gate's test against scipy's own t-tests, and its error rates on simulated per-seed FIDs."""

import numpy as np
import pytest
from scipy import stats

from resgan.metrics.significance import compare, promotes, t_test


def _fids(rng, shape, mean, sd):
    """Right-skewed per-seed FIDs (gamma, skew 1.5 as measured at 360 samples)."""
    k = (2 / 1.5) ** 2
    return mean - sd * k ** 0.5 + rng.gamma(k, sd / k ** 0.5, shape)


def test_paired_and_welch_equal_scipys_tests():
    rng = np.random.default_rng(0)
    champ, cand = _fids(rng, 10, 5.0, 1.0), _fids(rng, 10, 4.0, 1.0)
    r = t_test(champ, cand, paired=True)
    ref = stats.ttest_rel(champ, cand, alternative="greater")
    assert float(r["t"]) == pytest.approx(ref.statistic, rel=1e-12)
    assert float(r["p_value"]) == pytest.approx(ref.pvalue, rel=1e-10)
    assert float(r["df"]) == 9 and float(r["improvement"]) == pytest.approx(champ.mean() - cand.mean())

    cand7 = cand[:7]
    r = t_test(champ, cand7, paired=False)
    ref = stats.ttest_ind(champ, cand7, equal_var=False, alternative="greater")
    assert float(r["t"]) == pytest.approx(ref.statistic, rel=1e-12)
    assert float(r["p_value"]) == pytest.approx(ref.pvalue, rel=1e-10)
    assert float(r["df"]) == pytest.approx(ref.df, rel=1e-12)

    # a practical minimum moves the null hypothesis: the one-sample test of the differences
    r = t_test(champ, cand, paired=True, min_improvement=0.5)
    ref = stats.ttest_1samp(champ - cand, 0.5, alternative="greater")
    assert float(r["p_value"]) == pytest.approx(ref.pvalue, rel=1e-10)


def test_vectorised_over_leading_axes_like_one_at_a_time():
    rng = np.random.default_rng(1)
    a, b = _fids(rng, (4, 3, 10), 5, 1), _fids(rng, (4, 3, 10), 5, 1)
    many = t_test(a, b, paired=True)["p_value"]
    assert many.shape == (4, 3)
    assert many[2, 1] == pytest.approx(float(t_test(a[2, 1], b[2, 1], paired=True)["p_value"]))


def test_equal_scores_are_never_promoted_and_distinct_constant_ones_are():
    same = [3.0, 3.5, 2.9]
    c = compare(same, same, paired=True)
    assert not c.promote and c.p_value == 1.0 and c.improvement == 0.0 and c.se == c.t == 0.0
    better = compare([4.0, 4.5, 3.9], [3.0, 3.5, 2.9], paired=True)  # 1.0 lower on every seed
    assert better.promote and better.p_value == 0.0
    assert not compare([4.0, 4.5, 3.9], [3.0, 3.5, 2.9], paired=True, min_improvement=1.0).promote


def test_comparison_bounds_by_hand():
    champ = np.array([5.0, 6.0, 7.0, 5.5, 6.5])
    cand = np.array([4.0, 5.5, 5.0, 5.0, 5.5])
    c = compare(champ, cand, paired=True, alpha=0.05)
    d = champ - cand  # 1.0, 0.5, 2.0, 0.5, 1.0: mean 1.0, SD 0.6124
    se = d.std(ddof=1) / 5 ** 0.5
    assert c.improvement == pytest.approx(1.0) and c.se == pytest.approx(se)
    assert c.lower_bound == pytest.approx(1.0 - stats.t.ppf(0.95, 4) * se)
    assert c.detectable == pytest.approx((stats.t.ppf(0.95, 4) + stats.t.ppf(0.8, 4)) * se)
    assert c.champion_sd == pytest.approx(champ.std(ddof=1)) and c.seeds == 5
    assert c.promote and "p = " in c.summary() and "standard error" in c.summary()
    with pytest.raises(ValueError, match="same seeds"):
        compare(champ, cand[:4], paired=True)


@pytest.mark.parametrize("mean, sd", [(2.56, 0.54), (4.42, 1.10), (16.2, 3.4)])
def test_error_rate_and_power_on_skewed_per_seed_fids(mean, sd):
    """Equal models: promoted at most about 5 % of the time; better by two standard errors of
    the difference of two 10-seed means: at least half the time; worse: almost never."""
    rng = np.random.default_rng(2)
    n, reps = 10, 20_000
    se_diff = sd * (2 / n) ** 0.5
    champ = _fids(rng, (reps, n), mean, sd)

    def rate(shift):
        cand = _fids(rng, (reps, n), mean - shift, sd)
        return promotes(champ, cand, paired=True, alpha=0.05).mean()

    assert 0.035 < rate(0.0) < 0.065
    assert rate(2 * se_diff) >= 0.5
    assert rate(-2 * se_diff) < 0.001
