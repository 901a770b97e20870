import numpy as np
import pytest
import torch

from resgan.data import load_dataset, load_split, save_split, split


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_digits_range_and_resolution(resolution):
    x, y = load_dataset("digits", resolution)
    assert x.shape == (1797, 1, resolution, resolution) and x.dtype == np.float32
    assert x.min() == pytest.approx(-1.0) and x.max() == pytest.approx(1.0)
    assert set(np.unique(y)) == set(range(10))


def test_split_is_seeded_stratified_and_round_trips(tmp_path):
    x, y = load_dataset("digits", 8)
    a = split(x, y, 0.2, 0)
    b = split(x, y, 0.2, 0)
    c = split(x, y, 0.2, 1)
    assert len(a[0]) == 1437 and len(a[2]) == 360
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert np.bincount(a[3]).min() >= 35  # every class held out (~36 each)
    save_split(tmp_path / "s.npz", a[0], a[1])
    xt, yt = load_split(tmp_path / "s.npz")
    assert torch.equal(xt, torch.from_numpy(a[0])) and torch.equal(yt, torch.from_numpy(a[1]))


def test_unknown_dataset():
    from resgan.data import DataError

    with pytest.raises(DataError, match="allowed: digits, mnist-sample, mnist, fashion-mnist, cifar10, folder"):
        load_dataset("celeba", 8)


def test_classifier_reaches_95_percent_with_default_epochs():
    from resgan.config import load_config
    from resgan.metrics.classifier import train_classifier

    x, y = load_dataset("digits", 8)
    t = [torch.from_numpy(a) for a in split(x, y, 0.2, 0)]
    _, acc = train_classifier(*t, epochs=load_config({}).eval.classifier_epochs, seed=0)
    assert 0.95 <= acc <= 1.0
