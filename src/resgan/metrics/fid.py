"""FID: pytorch-fid's Fréchet distance over (mu, sigma) statistics in its .npz format."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def draw_until_settled(draw: Callable[[np.random.Generator], float], *, seed: int = 0,
                       block: int = 50, max_draws: int = 4000,
                       rel_se: float = 0.01) -> np.ndarray:
    """FIDs ``draw(rng)`` drawn ``block`` at a time until the standard error of their mean
    is at most ``rel_se`` of it or ``max_draws`` were drawn (deterministic for a ``seed``)."""
    rng = np.random.default_rng(seed)
    fids: list[float] = []
    while len(fids) < max_draws:
        fids += [draw(rng) for _ in range(min(block, max_draws - len(fids)))]
        if np.std(fids, ddof=1) / len(fids) ** 0.5 <= rel_se * np.mean(fids):
            break
    return np.asarray(fids)


def copier_draws(feats: np.ndarray, mu: np.ndarray, sigma: np.ndarray, n: int, *,
                 seed: int = 0, **settle: Any) -> np.ndarray:
    """FIDs of a generator that copies the training set, at ``n`` samples.

    Such a generator draws ``n`` of the reference images (``feats``, whose statistics are
    ``mu, sigma``) i.i.d., with replacement; its FID against ``(mu, sigma)`` is pure sampling
    noise, which at small ``n`` is large: the sample mean alone is off by
    ``trace(sigma) / n`` in expectation. It is the lowest FID a generator can be expected to
    score, and lower than a generator of *new* images scores (:func:`novel_draws`): its
    samples are the very points the reference was computed from.

    A label-stratified held-out set is neither: its class proportions are exact, while a
    generator's vary from sample to sample, so its FID is lower still (docs/benchmarks.md).

    Returns:
        the FIDs of the draws (:func:`draw_until_settled`).
    """
    feats = np.asarray(feats, dtype=np.float64)
    return draw_until_settled(
        lambda rng: fid_from_features(feats[rng.integers(0, len(feats), n)], mu, sigma),
        seed=seed, **settle)


def novel_draws(train: np.ndarray, heldout: np.ndarray, *, seed: int = 0,
                **settle: Any) -> np.ndarray:
    """FIDs of a generator of new real images, at the held-out count.

    The real images (training and held-out features together) are split at random, without
    stratification, into ``len(heldout)`` images and a reference of ``len(train)`` images;
    the FID of the first part against the reference's statistics is what a generator that
    draws new images from the data distribution scores against training statistics of that
    size. Each draw is another random split.

    Returns:
        the FIDs of the draws (:func:`draw_until_settled`).
    """
    pool = np.concatenate([np.asarray(train, np.float64), np.asarray(heldout, np.float64)])
    n = len(heldout)

    def draw(rng: np.random.Generator) -> float:
        order = rng.permutation(len(pool))
        return fid_from_features(pool[order[:n]], *feature_stats(pool[order[n:]]))

    return draw_until_settled(draw, seed=seed, **settle)


def mean_and_se(draws: np.ndarray) -> tuple[float, float]:
    """The mean of FID draws and its standard error."""
    return float(np.mean(draws)), float(np.std(draws, ddof=1) / len(draws) ** 0.5)


def ratio_band(draws: np.ndarray, repeats: int, *, q: tuple[float, float] = (0.05, 0.95),
               resamples: int = 20_000, seed: int = 0) -> tuple[float, float]:
    """The range a reference generator's own ratio falls in by noise alone: quantiles ``q`` of
    the mean of ``repeats`` of its draws (resampled) over the mean of all of them. A model
    scored on ``repeats`` seeds whose ratio to that reference lies inside is within the
    reference's noise."""
    draws = np.asarray(draws, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = draws[rng.integers(0, len(draws), (resamples, repeats))].mean(1)
    lo, hi = np.quantile(means / draws.mean(), q)
    return float(lo), float(hi)
