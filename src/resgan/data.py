"""Datasets, splits and their on-disk format.

A split is one ``.npz`` file with ``x`` (float32, N x C x R x R, in [-1, 1]) and ``y``
(int64 labels, -1 where unknown). The embedded default is scikit-learn's handwritten
digits: 1,797 real 8x8 images in 17 grey levels, shipped inside scikit-learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("digits",)


def load_dataset(name: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Load a whole dataset as images in [-1, 1] at ``resolution`` and labels.

    Returns:
        (x, y): float32 array N x C x resolution x resolution, int64 array N.
    """
    if name != "digits":
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0 * 2.0 - 1.0).unsqueeze(1)
    if resolution != x.shape[-1]:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.clamp(-1, 1).numpy(), digits.target.astype(np.int64)


def split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Seeded, label-stratified train/test split. Returns (x_tr, y_tr, x_te, y_te)."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def save_split(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=x.astype(np.float32), y=y.astype(np.int64))


def load_split(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a split written by ``save_split`` as tensors (x, y)."""
    with np.load(path, allow_pickle=False) as f:
        return torch.from_numpy(f["x"]), torch.from_numpy(f["y"])
