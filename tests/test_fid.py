import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import gaussian_feats
from resgan.metrics.features import FeatureError, build_extractor
from resgan.metrics.fid import (copier_draws, feature_stats, fid_from_features, load_stats,
                              mean_and_se, novel_draws, ratio_band, save_stats)
from pytorch_fid.fid_score import calculate_frechet_distance


def test_closed_form_isotropic_gaussians():
    # FID(N(m1, s1^2 I), N(m2, s2^2 I)) = |m1 - m2|^2 + d (s1 - s2)^2
    d = 16
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = np.eye(d) * 1.0, np.eye(d) * 4.0  # std 1 and 2
    expected = d * 0.25 + d * (1 - 2) ** 2
    assert calculate_frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_sampled_gaussians_approach_the_closed_form():
    d = 8
    a = gaussian_feats(40_000, d, 0.0, 1.0, seed=0)
    b = gaussian_feats(40_000, d, 1.0, 1.5, seed=1)
    expected = d * 1.0 + d * 0.5 ** 2  # 10.0
    assert fid_from_features(a, *feature_stats(b)) == pytest.approx(expected, rel=0.02)
    assert fid_from_features(a, *feature_stats(a)) == pytest.approx(0.0, abs=1e-6)


def _clusters(a, n_points, seed=0):
    """Two tight clusters at x = +-a, half the points each."""
    rng = np.random.default_rng(seed)
    h = n_points // 2
    return np.concatenate([rng.normal([a, 0], 0.05, (h, 2)), rng.normal([-a, 0], 0.05, (h, 2))])


def test_copier_floor_of_two_clusters_by_hand():
    """i.i.d. draws of n put k of them at +a with k binomial, so the sample mean's x is off by
    a(2k/n - 1), whose square has expectation a^2 / n; the covariance term is O(1/n^2). A
    label-stratified subset (exactly n/2 per cluster) has no such term: it scores far below
    what any i.i.d. draw is expected to."""
    a, n = 10.0, 50
    x = _clusters(a, 1000)
    mu, sigma = feature_stats(x)
    draws = copier_draws(x, mu, sigma, n, seed=1)
    floor, se = mean_and_se(draws)
    assert floor == pytest.approx(a * a / n, rel=0.1)  # 2.0 by hand
    # drawn until the standard error is 1 % of the mean, or 4,000 draws (here: a chi-square
    # of one degree of freedom, relative spread sqrt(2), would need 20,000)
    assert len(draws) == 4000 and se == pytest.approx(2 ** 0.5 * floor / 4000 ** 0.5, rel=0.15)
    assert np.array_equal(copier_draws(x, mu, sigma, n, seed=1), draws)  # deterministic
    stratified = np.concatenate([x[:n // 2], x[500:500 + n // 2]])
    assert fid_from_features(stratified, mu, sigma) < 0.1 * floor


def test_novel_images_score_above_the_copier_by_hand():
    """New images: a random split of M = n + N points into n and a reference of N. The
    difference of the two parts' means, (M/N)(mean_S - mean_pop), has variance
    a^2 M^2 / (n N (M - 1)) for clusters at +-a (sampling without replacement): 0.534 for
    n = 250, N = 750, a = 10, against a^2 / n = 0.4 for a copier of the same reference."""
    a, n, big_n = 10.0, 250, 750
    pool = _clusters(a, n + big_n, seed=2)
    order = np.random.default_rng(0).permutation(len(pool))
    train, heldout = pool[order[n:]], pool[order[:n]]
    novel = novel_draws(train, heldout, seed=3)
    m = n + big_n
    assert mean_and_se(novel)[0] == pytest.approx(a * a * m * m / (n * big_n * (m - 1)), rel=0.06)
    copier = copier_draws(train, *feature_stats(train), n, seed=3)
    assert mean_and_se(copier)[0] == pytest.approx(a * a / n, rel=0.06)
    # each draw is the FID of a random split, recomputed here by hand
    rng = np.random.default_rng(3)
    o = rng.permutation(m)
    both = np.concatenate([train, heldout])
    assert novel[0] == pytest.approx(calculate_frechet_distance(
        *feature_stats(both[o[:n]]), *feature_stats(both[o[n:]])), rel=1e-12)


def test_draws_stop_by_count_or_error_and_are_the_draws():
    x = gaussian_feats(200, 3, 0.0, 1.0, seed=2)
    mu, sigma = feature_stats(x)
    draws = copier_draws(x, mu, sigma, 40, seed=3, block=20, max_draws=20)
    floor, se = mean_and_se(draws)
    assert len(draws) == 20 and se > 0.01 * floor  # stopped by max_draws
    assert len(copier_draws(x, mu, sigma, 40, seed=3, block=20, rel_se=0.5)) == 20  # by the error
    rng = np.random.default_rng(3)
    by_hand = [calculate_frechet_distance(*feature_stats(x[rng.integers(0, 200, 40)]), mu, sigma)
               for _ in range(20)]
    assert draws == pytest.approx(by_hand, rel=1e-9)
    assert se == pytest.approx(np.std(by_hand, ddof=1) / 20 ** 0.5, rel=1e-9)


def test_ratio_band_is_the_spread_of_a_mean_of_draws():
    """Draws of a chi-square of 1 degree of freedom: the mean of 10 is chi2(10)/10, whose
    5-95 % range is 0.394-1.831 (scipy)."""
    from scipy import stats

    draws = np.random.default_rng(0).chisquare(1, 200_000)
    lo, hi = ratio_band(draws, 10)
    assert lo == pytest.approx(stats.chi2.ppf(0.05, 10) / 10, rel=0.03)
    assert hi == pytest.approx(stats.chi2.ppf(0.95, 10) / 10, rel=0.03)
    assert ratio_band(np.full(50, 3.0), 10) == pytest.approx((1.0, 1.0))


def test_fewer_samples_than_dims_warns():
    with pytest.warns(UserWarning, match="samples < 64 feature dims"):
        feature_stats(gaussian_feats(10, 64, 0, 1, 0))


def test_stats_file_is_pytorch_fid_format(tmp_path, inception_weights):
    """Our .npz statistics read by pytorch-fid's own CLI give our FID."""
    a = gaussian_feats(500, 16, 0.0, 1.0, seed=0)
    b = gaussian_feats(500, 16, 0.3, 1.2, seed=1)
    save_stats(tmp_path / "a.npz", *feature_stats(a))
    save_stats(tmp_path / "b.npz", *feature_stats(b))
    ours = fid_from_features(a, *load_stats(tmp_path / "b.npz"))
    env = {"TORCH_HOME": str(inception_weights.parents[2]), "PATH": ""}
    out = subprocess.run([sys.executable, "-m", "pytorch_fid", "--device", "cpu",
                          str(tmp_path / "a.npz"), str(tmp_path / "b.npz")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    theirs = float(re.search(r"FID:\s+([0-9.eE+-]+)", out.stdout).group(1))
    assert theirs == pytest.approx(ours, rel=1e-6)
    assert 1.0 < ours < 10.0  # 16*0.09 + 16*0.04 = 2.08, plus sampling noise


def test_classifier_features(prepared):
    ex = build_extractor("classifier", classifier_path=prepared / "classifier.pt")
    assert ex(torch.zeros(5, 1, 8, 8)).shape == (5, 64)


def test_missing_classifier_is_a_clear_error(tmp_path):
    with pytest.raises(FeatureError, match="no such file"):
        build_extractor("classifier", classifier_path=tmp_path / "none.pt")


def test_missing_inception_weights_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FeatureError) as err:
        build_extractor("inception")
    msg = str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg and "eval.inception_weights" in msg
    assert "\n" not in msg
    with pytest.raises(FeatureError, match="no such file"):
        build_extractor("inception", inception_weights=str(tmp_path / "missing.pth"))


def test_inception_from_a_weights_file(inception_weights):
    ex = build_extractor("inception", inception_weights=str(inception_weights), dims=64)
    with torch.no_grad():
        f = ex(torch.rand(3, 1, 8, 8) * 2 - 1)
    assert f.shape == (3, 64)
    assert torch.isfinite(f).all() and f.std() > 0
