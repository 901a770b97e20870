"""More than FID, from the same features: KID and precision/recall.

KID (Binkowski et al. 2018, "Demystifying MMD GANs") is the unbiased estimate of the squared
MMD with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3. Unlike FID it has no bias at
small sample counts; it is averaged over random subsets, and their spread is reported with it,
as torch-fidelity does (subsets of min(1000, n_a, n_b) points, 100 of them).

Precision and recall (Kynkäänniemi et al. 2019) estimate each set's manifold as the union of
balls around its points, each reaching that point's k-th nearest neighbour in its own set
(k = 3): precision is the fraction of generated points inside the real manifold (quality),
recall the fraction of real points inside the generated one (coverage). Both depend on the
sample counts (the radii shrink as the sets grow): compare them at equal counts.
"""

from __future__ import annotations

import numpy as np
import torch

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PRC_K = 3


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 of two samples with the cubic polynomial kernel."""
    d = x.shape[1]
    m, n = len(x), len(y)
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    # The unbiased estimate leaves out the pairs of a point with itself (the diagonals).
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2 * k_xy.mean())


def kid(feat_a: np.ndarray, feat_b: np.ndarray, *, subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0,
        device: str | torch.device = "cpu") -> tuple[float, float]:
    """KID of two feature sets: the mean and standard deviation over random subsets.

    Args:
        feat_a, feat_b: N x D and M x D features.
        subsets: number of random subsets.
        subset_size: points per subset drawn (without replacement) from each set; capped at
            the smaller set's size.
        seed: seed of the subset draws.
        device: where the kernel matrices are computed (float64).
    Returns:
        (mean, std) of the unbiased MMD^2 over the subsets (std with ddof 0, as torch-fidelity).
    """
    a = torch.as_tensor(np.asarray(feat_a), dtype=torch.float64, device=device)
    b = torch.as_tensor(np.asarray(feat_b), dtype=torch.float64, device=device)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"KID needs two N x D feature sets of the same D, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 points per set")
    rng = np.random.default_rng(seed)
    mmds = np.empty(subsets)
    for s in range(subsets):
        ia = torch.as_tensor(rng.choice(len(a), m, replace=False), device=device)
        ib = torch.as_tensor(rng.choice(len(b), m, replace=False), device=device)
        mmds[s] = _mmd2_unbiased(a[ia], b[ib])
    return float(mmds.mean()), float(mmds.std())


def knn_radii(feats: torch.Tensor, k: int = PRC_K, *, batch_size: int = 1024) -> torch.Tensor:
    """Distance of each point to its k-th nearest neighbour in the same set (itself excluded)."""
    radii = []
    for rows in feats.split(batch_size):  # batch_size x N distances at a time
        dist = torch.cdist(rows, feats)
        # k + 1 smallest: the point itself is among them, at distance 0
        radii.append(dist.topk(k + 1, dim=1, largest=False).values[:, -1])
    return torch.cat(radii)


def coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, *,
             batch_size: int = 1024) -> float:
    """Fraction of ``points`` inside the union of balls (``centres``, ``radii``), edges included."""
    inside = [(torch.cdist(rows, centres) <= radii).any(dim=1)
              for rows in points.split(batch_size)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PRC_K, *,
                     batch_size: int = 1024,
                     device: str | torch.device = "cpu") -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real``.

    Args:
        real, fake: N x D and M x D features (compared as float32).
        k: the nearest neighbour whose distance is each ball's radius.
        batch_size: rows of distances computed at once (memory: batch_size x max(N, M) floats).
        device: where the distances are computed.
    Returns:
        (precision: fraction of fake points inside the real manifold,
         recall: fraction of real points inside the fake manifold).
    """
    r = torch.as_tensor(np.asarray(real), dtype=torch.float32, device=device)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float32, device=device)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"precision/recall needs two N x D feature sets of the same D, got "
                         f"{tuple(r.shape)} and {tuple(f.shape)}")
    if min(len(r), len(f)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points per set")
    precision = coverage(f, r, knn_radii(r, k, batch_size=batch_size), batch_size=batch_size)
    recall = coverage(r, f, knn_radii(f, k, batch_size=batch_size), batch_size=batch_size)
    return precision, recall
