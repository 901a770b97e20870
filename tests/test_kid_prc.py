"""KID and precision/recall: against their formulas by hand, cached real features, the
Scorer and `resgan fid --kid --prc`."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import gaussian_feats
from resgan.cli import main as cli
from resgan.data import load_dataset, load_split
from resgan.metrics.cache import cached_stats, features_path, load_features
from resgan.metrics.extra import kid, precision_recall
from resgan.metrics.features import FeatureError, build_extractor, extract_all
from resgan.metrics.fid import feature_stats, load_stats
from resgan.metrics.scoring import Scorer
from resgan.nets import Generator, sample


def _mmd2_loop(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, term by term (Binkowski et al., eq. 3)."""
    d = x.shape[1]

    def k(a, b):
        return (sum(a[i] * b[i] for i in range(d)) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_mmd_formula():
    a = gaussian_feats(12, 5, 0.0, 1.0, seed=0)
    b = gaussian_feats(12, 5, 0.5, 1.5, seed=1)
    # one subset of all points: the estimator of the whole sets (order does not matter)
    mean, std = kid(a, b, subsets=1, subset_size=12)
    assert mean == pytest.approx(_mmd2_loop(a, b), rel=1e-10, abs=1e-10)
    assert std == 0.0
    # several subsets: mean and (ddof 0) standard deviation of the subsets' estimates
    rng = np.random.default_rng(3)
    draws = [(rng.choice(12, 6, replace=False), rng.choice(12, 6, replace=False))
             for _ in range(4)]
    by_hand = [_mmd2_loop(a[i], b[j]) for i, j in draws]
    mean, std = kid(a, b, subsets=4, subset_size=6, seed=3)
    assert mean == pytest.approx(np.mean(by_hand), rel=1e-10, abs=1e-10)
    assert std == pytest.approx(np.std(by_hand), rel=1e-10, abs=1e-10)


def test_kid_near_zero_for_one_distribution_and_clearly_positive_for_a_shift():
    a = gaussian_feats(500, 8, 0.0, 1.0, seed=0)
    same = gaussian_feats(500, 8, 0.0, 1.0, seed=1)
    shifted = gaussian_feats(500, 8, 0.5, 1.0, seed=2)
    k_same, std_same = kid(a, same, subsets=20, subset_size=200)
    k_shift, std_shift = kid(a, shifted, subsets=20, subset_size=200)
    assert abs(k_same) < 0.05  # unbiased: scatters around 0, either sign (-0.009 .. 0.007)
    assert 0.8 < k_shift < 1.5 and k_shift > 5 * std_shift  # 1.10 .. 1.23 over seeds
    assert 0 < std_same < 0.05


def _hand_clouds():
    """Real: a 5 x 5 grid of spacing 1. Its 3rd-nearest-neighbour radius is 1, sqrt(2) at
    the corners. Fake: a unit square of 4 points at the centres of grid cells (distance
    sqrt(0.5) from a grid point: inside), and the same square far away (outside). Each fake
    point's 3rd neighbour is its square's diagonal, sqrt(2)."""
    real = np.array([(i, j) for i in range(5) for j in range(5)], dtype=float)
    square = np.array([(0.5, 0.5), (0.5, 1.5), (1.5, 0.5), (1.5, 1.5)])
    fake = np.concatenate([square, square + 100])
    return real, fake


def test_precision_recall_on_hand_made_clouds():
    real, fake = _hand_clouds()
    # precision: the 4 near fake points of 8. recall: a grid point (i, j) is within sqrt(2)
    # of a centre of the square iff a_i^2 + a_j^2 <= 2, with a = (.5, .5, .5, 1.5, 2.5) its
    # distance to the nearest centre per axis: i, j in {0, 1, 2}, 9 of 25 points.
    assert precision_recall(real, fake, k=3) == pytest.approx((0.5, 9 / 25), abs=1e-12)
    assert precision_recall(fake, real, k=3) == pytest.approx((9 / 25, 0.5), abs=1e-12)
    # batching changes nothing; a set against itself is fully inside
    assert precision_recall(real, fake, k=3, batch_size=3) == pytest.approx((0.5, 9 / 25))
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    # k = 1: the fake radius is the square's side, 1; grid points within 1 of a centre
    # need a_i^2 + a_j^2 <= 1: i, j in {0, 1, 2} again; real radii are 1 everywhere
    assert precision_recall(real, fake, k=1) == pytest.approx((0.5, 9 / 25))
    with pytest.raises(ValueError, match="more than 3 points"):
        precision_recall(real[:3], fake, k=3)


def test_features_cached_next_to_their_statistics(tmp_path):
    feats = gaussian_feats(40, 6, 0.0, 1.0, seed=0)
    calls = []

    def compute():
        calls.append(1)
        return feats

    key = {"dataset": "d", "resolution": 8, "split": "train", "extractor": "e", "dims": 6}
    (mu, sigma), path, reused = cached_stats(tmp_path, key, compute)
    assert not reused and len(calls) == 1
    assert features_path(path) == path.with_name(path.stem + ".features.npy")
    assert features_path(path).is_file()
    saved = load_features(path)
    assert saved.dtype == np.float32 and np.array_equal(saved, feats.astype(np.float32))
    np.testing.assert_allclose(mu, feature_stats(feats)[0])
    np.testing.assert_allclose(load_stats(path)[1], feature_stats(feats)[1])
    # the same key: both reused
    _, path2, reused = cached_stats(tmp_path, key, compute)
    assert reused and path2 == path and len(calls) == 1
    # statistics without features (an older cache): computed again, features written
    features_path(path).unlink()
    _, _, reused = cached_stats(tmp_path, key, compute)
    assert not reused and len(calls) == 2 and features_path(path).is_file()
    features_path(path).unlink()
    with pytest.raises(FeatureError, match="dvc repro prepare"):
        load_features(path)


@pytest.fixture(scope="module")
def prepared_dir(prepared, tmp_path_factory):
    """prepare's layout (features/ with the classifier, statistics, features, index.json),
    written with the library's own functions from the conftest split and classifier."""
    import shutil

    d = tmp_path_factory.mktemp("prep_kid")
    feats_dir = d / "features"
    feats_dir.mkdir()
    shutil.copy(prepared / "classifier.pt", feats_dir / "classifier.pt")
    x_tr, _ = load_split(prepared / "train.npz")
    ex = build_extractor("classifier", classifier_path=feats_dir / "classifier.pt")
    key = {"dataset": "digits", "resolution": 8, "split": "train", "extractor": "classifier",
           "dims": 64}
    _, path, _ = cached_stats(feats_dir, key, lambda: extract_all(ex, x_tr.split(256)))
    (feats_dir / "index.json").write_text(json.dumps(
        {"classifier": {"dims": 64, "train": path.name, "test": path.name}}))
    return d


def test_scorer_scores_kid_and_precision_recall(prepared_dir):
    torch.manual_seed(0)
    G = Generator(z_dim=16, channels=8, depth=1).eval()
    scorer = Scorer(prepared_dir, features="classifier", num_samples=100, seed=0, repeats=2)
    s = scorer.score(G)
    assert s.fid > 0 and len(s.per_seed) == 2
    assert s.kid > 0 and s.kid_std > 0  # an untrained G is far from the digits
    assert 0 <= s.precision <= 1 and 0 <= s.recall <= 1
    d = s.as_dict()
    assert {k: d[k] for k in ("kid", "kid_std", "precision", "recall")} == \
        {"kid": s.kid, "kid_std": s.kid_std, "precision": s.precision, "recall": s.recall}
    json.dumps(d)  # score.json

    # from the same features as the FID: seed 0 alone, recomputed here
    one = Scorer(prepared_dir, features="classifier", num_samples=100, seed=0).score(G)
    feats = extract_all(scorer.extract, sample(G, 100, seed=0).split(250))
    assert one.kid == pytest.approx(kid(scorer.ref_features, feats, seed=0)[0])
    assert one.kid_heldout == pytest.approx(kid(scorer.heldout_features, feats, seed=0)[0])
    assert one.kid_std == 0.0 and one.per_seed[0] == pytest.approx(s.per_seed[0])
    # the ± of KID, precision and recall is their SD over the sample seeds
    feats1 = extract_all(scorer.extract, sample(G, 100, seed=1).split(250))
    kids = [one.kid, kid(scorer.ref_features, feats1, seed=1)[0]]
    assert s.kid == pytest.approx(np.mean(kids)) and s.kid_std == pytest.approx(np.std(kids, ddof=1))

    fid_only = scorer.with_samples(80).score(G, fid_only=True)
    assert fid_only.kid is None and fid_only.recall is None and fid_only.fid > 0
    assert scorer.with_samples(80).protocol.id != scorer.protocol.id


def test_scorer_without_reference_features_is_a_clear_error(prepared_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(prepared_dir, old)
    name = json.loads((old / "features" / "index.json").read_text())["classifier"]["train"]
    features_path(old / "features" / name).unlink()
    with pytest.raises(FeatureError, match="re-run `dvc repro prepare`"):
        Scorer(old, features="classifier", num_samples=10, seed=0)


def _folder(path, images):
    path.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).resize((32, 32), Image.NEAREST).save(path / f"{i:03d}.png")
    return path


def _value(name, text):
    return float(re.search(rf"{name}:\s+([0-9.eE+-]+)", text).group(1))


@pytest.mark.filterwarnings("ignore:FID from 40 samples")
def test_cli_kid_and_precision_recall(prepared, tmp_path, capsys):
    x, _ = load_dataset("digits", 8)
    imgs = ((x[:, 0] + 1) * 127.5).round().astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 120, imgs[40:80].shape)
    a = _folder(tmp_path / "a", imgs[:40])
    b = _folder(tmp_path / "b", np.clip(imgs[40:80] + noise, 0, 255).astype(np.uint8))
    clf = ["--features", "classifier", "--classifier", str(prepared / "classifier.pt")]

    cli(["fid", str(a), str(b), *clf])
    fid_only = capsys.readouterr().out
    cli(["fid", str(a), str(b), "--kid", "--prc", *clf])
    out = capsys.readouterr().out
    assert _value("FID", out) == pytest.approx(_value("FID", fid_only), rel=1e-9)
    kid_mean = _value("KID", out)
    kid_std = float(re.search(r"KID:.*± ([0-9.eE+-]+)", out).group(1))
    assert kid_mean > 3 * kid_std > 0
    # the noisy images cover only part of the real ones (recall < 1); they may all fall in
    # the real manifold (precision 1 with the 5-epoch extractor)
    assert 0 < _value("Precision", out) <= 1 and 0 < _value("Recall", out) < 1
    cli(["fid", str(b), str(a), "--kid", "--prc", *clf])  # k-NN manifolds: swapping the
    swapped = capsys.readouterr().out                       # sets swaps the two figures
    assert _value("Precision", swapped) == pytest.approx(_value("Recall", out), abs=1e-12)
    assert _value("Recall", swapped) == pytest.approx(_value("Precision", out), abs=1e-12)

    cli(["fid", str(a), str(a), "--kid", "--prc", *clf])
    same = capsys.readouterr().out
    # identical sets: the unbiased MMD^2 leaves out each point's pair with itself, so it is
    # below zero by exactly 2 (mean of the diagonal - mean of all) / (m - 1) (by hand here)
    from resgan.metrics.paths import features_of_path

    feats = features_of_path(a, features="classifier", classifier=prepared / "classifier.pt")
    f = feats.astype(np.float64)
    k = (f @ f.T / f.shape[1] + 1) ** 3
    m = len(f)
    by_hand = 2 * (k.sum() - np.trace(k)) / (m * (m - 1)) - 2 * k.mean()
    assert by_hand < 0 and _value("KID", same) == pytest.approx(by_hand, rel=1e-6)
    assert _value("Precision", same) == 1.0 and _value("Recall", same) == 1.0

    # a features .npy in place of a folder: the same numbers
    ex = build_extractor("classifier", classifier_path=prepared / "classifier.pt")
    np.save(tmp_path / "a.npy", feats)
    assert feats.shape == (40, ex(torch.zeros(1, 1, 8, 8)).shape[1])
    cli(["fid", str(tmp_path / "a.npy"), str(b), "--kid", "--prc", *clf])
    again = capsys.readouterr().out
    for name in ("KID", "Precision", "Recall"):
        assert _value(name, again) == pytest.approx(_value(name, out), rel=1e-6)

    # .npz statistics hold no features: one clear line
    cli(["fid", str(a), str(tmp_path / "a.npz"), "--save-stats", *clf])
    with pytest.raises(SystemExit, match="KID and precision/recall need a folder of images or "
                                         "a features .npy") as err:
        cli(["fid", str(tmp_path / "a.npz"), str(b), "--kid", *clf])
    assert "\n" not in str(err.value)
