"""Real-data statistics and features, cached on disk and reused, keyed by what they depend on.

A file's name carries the dataset, split, extractor and feature dims in plain words and a
hash of the full key (dataset, resolution, the split's image content, the extractor's
weights, dims), so statistics are computed once per key and never reused for another:
for example, changing the classifier's training re-computes its statistics but keeps the
(expensive) Inception ones. The features themselves (for KID and precision/recall, which
need more than mean and covariance) are saved next to the statistics, under the same name
with ``.features.npy`` in place of ``.npz``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resgan.metrics.features import FeatureError, scoring_code_hash
from resgan.metrics.fid import feature_stats, load_stats, save_stats

Stats = tuple[np.ndarray, np.ndarray]


def fingerprint(obj: Any) -> str:
    """sha256 of an array, a tensor state dict, or a file's bytes (hex, 16 chars)."""
    h = hashlib.sha256()
    if isinstance(obj, (str, Path)):
        with open(obj, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    elif isinstance(obj, dict):  # a state dict: names and tensor bytes, in order
        for k, v in obj.items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    else:
        h.update(np.ascontiguousarray(obj).tobytes())
    return h.hexdigest()[:16]


def stats_file(key: dict[str, Any]) -> str:
    """``<dataset>-r<resolution>-<split>-<extractor><dims>-<hash of the whole key>.npz``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return (f"{key['dataset']}-r{key['resolution']}-{key['split']}-"
            f"{key['extractor']}{key['dims']}-{digest}.npz")


def features_path(stats_path: str | Path) -> Path:
    """Where the features of a statistics file are: ``<stem>.features.npy`` next to it."""
    return Path(stats_path).with_suffix(".features.npy")


def load_features(stats_path: str | Path) -> np.ndarray:
    """The N x D features (float32) saved next to the statistics file ``stats_path``.

    Raises:
        FeatureError: they are not there (statistics written before features were kept).
    """
    path = features_path(stats_path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FeatureError(f"{path} not found: KID and precision/recall need the real features "
                           f"next to {Path(stats_path).name} (an older prepare wrote none): "
                           "re-run `dvc repro prepare`") from None


def cached_stats(folder: str | Path, key: dict[str, Any],
                 compute: Callable[[], np.ndarray]) -> tuple[Stats, Path, bool]:
    """The statistics for ``key`` from ``folder``, computed and saved when not there yet.

    Args:
        compute: returns the N x D features; their statistics and the features (float32,
            ``features_path``) are saved.
    Returns:
        ((mu, sigma), the file, whether it was reused). The file is pytorch-fid's .npz.
    """
    path = Path(folder) / stats_file(key)
    if path.is_file() and features_path(path).is_file():
        return load_stats(path), path, True
    feats = compute()  # also when only the features are missing (an older cache)
    mu, sigma = feature_stats(feats)
    save_stats(path, mu, sigma)
    np.save(features_path(path), np.asarray(feats, dtype=np.float32))
    path.with_suffix(".json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
    return (mu, sigma), path, False


def extractor_key(name: str, *, classifier_path: str | Path | None = None,
                  inception_weights: str | Path | None = None, dims: int = 2048) -> dict[str, Any]:
    """What identifies an extractor's features: its name, weights and dims, and the scoring
    code (quantisation and forward pass: features.scoring_code_hash)."""
    code = scoring_code_hash()
    if name == "classifier":
        ckpt = torch.load(classifier_path, map_location="cpu", weights_only=True)
        return {"extractor": name, "weights": fingerprint(ckpt["state_dict"]),
                "dims": int(ckpt["kwargs"]["feat_dim"]), "code": code}
    weights = fingerprint(inception_weights) if inception_weights else "hub:pt_inception-2015-12-05"
    return {"extractor": name, "weights": weights, "dims": dims, "code": code}
