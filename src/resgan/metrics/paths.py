"""Features and statistics of an image folder, a features .npy or an .npz, for ``resgan fid``.

With Inception features this is pytorch-fid's own code path (the same image loading,
resizing and pooling), so the FID equals ``python -m pytorch_fid`` on the same inputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from resgan.data import IMAGE_EXTENSIONS
from resgan.metrics.classifier import load_classifier_checkpoint
from resgan.metrics.features import (FeatureError, classifier_extractor, extract_all,
                                     load_inception)
from resgan.metrics.fid import feature_stats, load_stats



def image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatureError(f"{folder}: neither a folder of images nor an .npz statistics file")
    files = sorted(f for ext in IMAGE_EXTENSIONS for f in folder.glob(f"*.{ext}"))
    if not files:
        raise FeatureError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _load_images(files: list[Path], channels: int, resolution: int) -> torch.Tensor:
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    arr = [np.asarray(Image.open(f).convert(mode).resize((resolution, resolution),
                                                          Image.BILINEAR), dtype=np.float32)
           for f in files]
    x = torch.from_numpy(np.stack(arr)) / 255.0 * 2 - 1
    return x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2)


def features_of_path(path: str | Path, *, features: str = "inception", dims: int = 2048,
                     batch_size: int = 50, device: str = "cpu", num_workers: int = 0,
                     classifier: str | Path | None = None, inception_weights: str | None = None,
                     ) -> np.ndarray:
    """N x D features of a folder of images, or of a .npy of features (such as prepare's
    ``<stem>.features.npy`` next to its statistics).

    Raises:
        FeatureError: ``path`` is an .npz of statistics (it holds no features), or the folder
            or the extractor cannot be used.
    """
    path = str(path)
    if path.endswith(".npz"):
        raise FeatureError(f"{path}: statistics (mu, sigma) hold no features: KID and "
                           "precision/recall need a folder of images or a features .npy")
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    files = image_files(path)
    if features == "inception":
        from pytorch_fid.fid_score import get_activations

        net = load_inception(inception_weights, dims, device)
        return get_activations([str(f) for f in files], net, batch_size, dims, device, num_workers)
    if features == "classifier":
        if classifier is None:
            raise FeatureError("--features classifier needs --classifier PATH "
                               "(prepare writes outputs/prepare/features/classifier.pt)")
        net, info = load_classifier_checkpoint(classifier, device)
        x = _load_images(files, net.kwargs["img_channels"], info.get("resolution", 8))
        return extract_all(classifier_extractor(net, device), x.split(batch_size))
    raise FeatureError(f"unknown features {features!r}; allowed: inception, classifier")


def stats_of_features(feats: np.ndarray, features: str = "inception"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of N x D features as ``resgan fid`` computes them."""
    if features == "inception":
        # pytorch-fid's calculate_activation_statistics on its own activations: the same FID
        if len(feats) < feats.shape[1]:
            warnings.warn(f"{len(feats)} images < {feats.shape[1]} feature dims: the covariance "
                          "is singular and the FID strongly biased", stacklevel=2)
        return np.mean(feats, axis=0), np.cov(feats, rowvar=False)
    return feature_stats(feats)


def stats_of_path(path: str | Path, *, features: str = "inception", dims: int = 2048,
                  batch_size: int = 50, device: str = "cpu", num_workers: int = 0,
                  classifier: str | Path | None = None, inception_weights: str | None = None,
                  ) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(mu, sigma, number of images or None for an .npz) of a folder, a features .npy or an
    .npz file."""
    path = str(path)
    if path.endswith(".npz"):
        mu, sigma = load_stats(path)
        return mu, sigma, None
    feats = features_of_path(path, features=features, dims=dims, batch_size=batch_size,
                             device=device, num_workers=num_workers, classifier=classifier,
                             inception_weights=inception_weights)
    return (*stats_of_features(feats, features), len(feats))
