"""FID: pytorch-fid's Fréchet distance over (mu, sigma) statistics in its .npz format."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from pytorch_fid.fid_score import calculate_frechet_distance  # noqa: F401 (re-exported)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of N x D features, as pytorch-fid computes them."""
    feats = np.asarray(feats, dtype=np.float64)
    if len(feats) < feats.shape[1]:
        warnings.warn(f"FID from {len(feats)} samples < {feats.shape[1]} feature dims: "
                      "the covariance is singular and the FID strongly biased", stacklevel=2)
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write statistics that ``python -m pytorch_fid`` can read (keys mu, sigma)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma)


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return f["mu"][:], f["sigma"][:]


def fid_from_features(feats: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """FID of a feature set against reference statistics."""
    m, s = feature_stats(feats)
    return float(calculate_frechet_distance(m, s, mu, sigma))


def fid_of_generator(G, extractor, ref: tuple[np.ndarray, np.ndarray], n: int, *, seed: int,
                     device="cpu", batch_size: int = 500) -> float:
    """FID of ``n`` samples of G (eval mode) against reference statistics (mu, sigma)."""
    from resgan.metrics.features import extract_all
    from resgan.nets import sample

    feats = extract_all(extractor, sample(G, n, seed=seed, device=device,
                                          batch_size=batch_size).split(batch_size))
    return fid_from_features(feats, *ref)


def sampling_floor(feats: np.ndarray, mu: np.ndarray, sigma: np.ndarray, n: int, *,
                   seed: int = 0, block: int = 50, max_draws: int = 4000,
                   rel_se: float = 0.01) -> tuple[float, float, int]:
    """The FID a perfect generator is expected to score at ``n`` samples.

    A generator that samples the reference images exactly (``feats``, whose statistics are
    ``mu, sigma``) draws ``n`` of them i.i.d., with replacement; its FID against
    ``(mu, sigma)`` is then pure sampling noise, which at small ``n`` is large: the sample
    mean alone is off by ``trace(sigma) / n`` in expectation. This returns the mean over
    draws of that FID, drawn ``block`` at a time until its standard error is at most
    ``rel_se`` of it or ``max_draws`` were drawn (deterministic for a ``seed``).

    A held-out set is not such a draw when the split was stratified by label: its class
    proportions are exact, while a generator's vary from sample to sample, so its FID is
    lower than any generator's can be expected to be (docs/benchmarks.md (i)).

    Returns:
        (mean FID, its standard error, draws).
    """
    feats = np.asarray(feats, dtype=np.float64)
    rng = np.random.default_rng(seed)
    fids: list[float] = []
    while len(fids) < max_draws:
        fids += [fid_from_features(feats[rng.integers(0, len(feats), n)], mu, sigma)
                 for _ in range(min(block, max_draws - len(fids)))]
        mean, se = float(np.mean(fids)), float(np.std(fids, ddof=1) / len(fids) ** 0.5)
        if se <= rel_se * mean:
            break
    return mean, se, len(fids)
