"""Shared fixtures: tiny real data, a tiny config, an embedded MLflow store per test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


TINY = {
    "model": {"depth": 1, "channels": 8, "z_dim": 16},
    "train": {"epochs": 2, "batch_size": 32, "num_workers": 2, "fid_samples": 100,
              "checkpoint_every": 1, "sample_every": 1},
    "tune": {"num_samples": 2, "epochs": 2, "grace_period": 1, "depth_choices": [1, 2]},
    "ablation": {"depths": [1, 2], "seeds": [0], "epochs": 1},
    "eval": {"num_samples": 200, "classifier_epochs": 5, "repeats": 3},
}


@pytest.fixture
def tiny_cfg():
    from resgan.config import load_config

    return load_config(TINY)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """The digits split, a classifier and its real statistics, as prepare writes them."""
    from resgan.data import load_dataset, save_split, split
    from resgan.metrics.classifier import save_classifier, train_classifier
    from resgan.metrics.features import build_extractor, extract_all
    from resgan.metrics.fid import feature_stats, save_stats

    d = tmp_path_factory.mktemp("prepared")
    x, y = load_dataset("digits", 8)
    x_tr, y_tr, x_te, y_te = split(x, y, 0.2, 0)
    save_split(d / "train.npz", x_tr, y_tr)
    save_split(d / "test.npz", x_te, y_te)
    t = [torch.from_numpy(a) for a in (x_tr, y_tr, x_te, y_te)]
    net, acc = train_classifier(*t, epochs=5, seed=0)
    save_classifier(net, d / "classifier.pt", test_accuracy=acc)
    ex = build_extractor("classifier", classifier_path=d / "classifier.pt")
    feats = extract_all(ex, t[0].split(256))
    save_stats(d / "stats.npz", *feature_stats(feats))
    np.save(d / "stats.features.npy", feats.astype(np.float32))  # as resgan.metrics.cache keeps them
    return d


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A real embedded MLflow store (sqlite + local artifacts) private to the test."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A weights file for pytorch-fid's FID Inception, made offline (random weights with
    batch-norm statistics from 64 real digits: informative features, meaningless values)."""
    from resgan.data import load_dataset
    from resgan.metrics.features import INCEPTION_FILE, save_offline_inception

    x, _ = load_dataset("digits", 8)
    home = tmp_path_factory.mktemp("torch_home")
    return save_offline_inception(home / "hub" / "checkpoints" / INCEPTION_FILE,
                                  torch.from_numpy(x[:64]))


def gaussian_feats(n: int, d: int, mean: float, std: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, std, size=(n, d))
