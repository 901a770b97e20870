"""Benchmark (j): how often the registry gate promotes, against the true improvement.

Simulates the per-seed FIDs of a champion and a candidate at the noise levels this project
measures, and applies two rules to them, side by side:

- old: the candidate's mean over ``--seeds`` sample seeds beats the champion's recorded mean
  by more than ``--old-margin`` FID points (the gate before 2026-12-02: margin 1.0);
- new: both models scored on the same fresh seeds, the one-sided paired t-test at ``--alpha``
  (``resgan.metrics.significance.promotes``: the very function the gate decides with).

Per-seed FIDs are right-skewed: a shifted gamma with the measured skew (``--skew``; 1.5 at 360
samples, docs/benchmarks.md (i)), mean and SD of the level, and correlation ``--rho`` between
the two models' FIDs on the same seed (a Gaussian copula; ``--measure-rho`` measures it on
generator files). The improvement is in standard errors of the difference of two independent
``--seeds``-seed means, SD * sqrt(2 / seeds), and in FID points.

Then the winner's curse: ``--challengers`` candidates in a row, every one as good as the first
champion. Under the old rule the champion's recorded FID is the lucky draw it won with, and the
next candidate must beat that; under the new rule every challenge scores both models afresh.

    .venv/bin/python bench/gate.py                         # the tables of docs/benchmarks.md (j)
    .venv/bin/python bench/gate.py --measure-rho A.pt B.pt C.pt   # after `dvc repro prepare`
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from scipy import stats

from resgan.machine import describe
from resgan.metrics.significance import promotes

# (name, champion's mean FID, per-seed SD): classifier features, 1,000 samples (docs/results.md)
LEVELS = (("low (today's champion)", 2.56, 0.54), ("medium (20 seeds of a champion)", 4.42, 1.10),
          ("high (a 2026-11-28 champion)", 16.2, 3.4))
SHIFTS = (-2, -1, 0, 1, 2, 3, 4)  # true improvement, in standard errors of the difference


def per_seed_fids(rng: np.random.Generator, shape: tuple[int, ...], mean: float, sd: float,
                  skew: float, rho: float = 0.0, paired_with: np.ndarray | None = None):
    """Per-seed FIDs: a gamma of the given skew shifted to ``mean`` and scaled to ``sd``.
    With ``paired_with`` (the normal scores of the other model on the same seeds), the two
    are correlated ``rho`` through a Gaussian copula. Returns (FIDs, their normal scores)."""
    z = rng.standard_normal(shape)
    if paired_with is not None:
        z = rho * paired_with + (1 - rho ** 2) ** 0.5 * z
    k = (2 / skew) ** 2
    g = stats.gamma.ppf(stats.norm.cdf(z), k)  # mean k, SD sqrt(k)
    return mean + sd * (g - k) / k ** 0.5, z


def power_table(a: argparse.Namespace, rng: np.random.Generator) -> None:
    n, reps = a.seeds, a.reps
    print(f"P(promote) over {reps:,} simulated comparisons each; {n} seeds per model; per-seed "
          f"skew {a.skew}, correlation {a.rho} on shared seeds. Improvement: champion's true "
          f"mean minus the candidate's, in standard errors of the difference of two {n}-seed "
          f"means (SE = SD x sqrt(2/{n})) and in FID points.\n")
    header = "| noise level (FID, per-seed SD) | SE | " + " | ".join(
        f"{s:+d} SE" for s in SHIFTS) + " |"
    print(header)
    print("| :--- | ---: | " + " | ".join("---:" for _ in SHIFTS) + " |")
    for name, mean, sd in LEVELS:
        se = sd * (2 / n) ** 0.5
        old, new, points = [], [], []
        for shift in SHIFTS:
            delta = shift * se
            champ, z = per_seed_fids(rng, (reps, n), mean, sd, a.skew)
            # old: both evaluated on the same seeds 0..n-1 (correlated rho), means compared
            cand, _ = per_seed_fids(rng, (reps, n), mean - delta, sd, a.skew, a.rho, z)
            old.append((champ.mean(1) - cand.mean(1) > a.old_margin).mean())
            # new: both on the same fresh seeds, the paired t-test
            champ, z = per_seed_fids(rng, (reps, n), mean, sd, a.skew)
            cand, _ = per_seed_fids(rng, (reps, n), mean - delta, sd, a.skew, a.rho, z)
            new.append(promotes(champ, cand, paired=True, alpha=a.alpha,
                                min_improvement=a.min_improvement).mean())
            points.append(delta)
        label = f"{name}: {mean}, SD {sd}"
        print(f"| {label} — FID points | {se:.2f} | "
              + " | ".join(f"{d:+.2f}" for d in points) + " |")
        print(f"| old rule (mean beats recorded by > {a.old_margin:g}) | | "
              + " | ".join(f"{p:.1%}" for p in old) + " |")
        print(f"| **new rule** (paired t, alpha {a.alpha:g}) | | "
              + " | ".join(f"**{p:.1%}**" for p in new) + " |")


def winners_curse(a: argparse.Namespace, rng: np.random.Generator) -> None:
    n, k, reps = a.seeds, a.challengers, a.sequences
    print(f"\nThe winner's curse: {k} challengers in a row, all as good as the first champion; "
          f"{reps:,} sequences per row.\n")
    print("| noise level | rule | champion changes per sequence | the compared champion FID "
          "minus its true mean, at the last challenge |")
    print("| :--- | :--- | ---: | ---: |")
    for (name, mean, sd), rule in itertools.product(LEVELS, ("old", "old0", "new")):
        changes = np.zeros(reps)
        if rule.startswith("old"):
            margin = a.old_margin if rule == "old" else 0.0
            recorded, _ = per_seed_fids(rng, (reps, n), mean, sd, a.skew)
            recorded = recorded.mean(1)  # what the first champion scored
            for _ in range(k):
                cand = per_seed_fids(rng, (reps, n), mean, sd, a.skew)[0].mean(1)
                win = recorded - cand > margin
                changes += win
                recorded = np.where(win, cand, recorded)
            bias = recorded - mean
            label = f"old, margin {margin:g}"
        else:
            for _ in range(k):
                champ, z = per_seed_fids(rng, (reps, n), mean, sd, a.skew)
                cand, _ = per_seed_fids(rng, (reps, n), mean, sd, a.skew, a.rho, z)
                changes += promotes(champ, cand, paired=True, alpha=a.alpha,
                                    min_improvement=a.min_improvement)
            bias = champ.mean(1) - mean  # the last challenge's fresh scores of the champion
            label = f"**new** (fresh seeds, alpha {a.alpha:g})"
        print(f"| {name}: {mean}, SD {sd} | {label} | {changes.mean():.2f} | "
              f"{bias.mean():+.3f} (SD {bias.std():.3f}) |")


def measure_rho(a: argparse.Namespace) -> None:
    """Score generator files on the same seeds; the correlation of their per-seed FIDs."""
    from resgan.metrics.scoring import Scorer
    from resgan.stage import read_params
    from resgan.training import checkpoint as ckpt_io

    e = read_params().eval
    scorer = Scorer.from_eval(a.prepared, e).with_seeds(range(a.rho_seed, a.rho_seed + a.rho_seeds))
    fids = []
    for path in a.measure_rho:
        s = scorer.score(ckpt_io.generator_from(ckpt_io.load(path)), fid_only=True)
        fids.append(s.per_seed)
        print(f"{path}: FID {s.fid:.3f}, SD {s.fid_std:.3f} over {a.rho_seeds} seeds, skew "
              f"{stats.skew(s.per_seed):+.2f}", flush=True)
    c = np.corrcoef(np.array(fids))[np.triu_indices(len(fids), 1)]
    print(f"\ncorrelation of per-seed FIDs on shared seeds over {len(c)} pairs: mean {c.mean():.3f}, "
          f"median {np.median(c):.3f}, range {c.min():.2f} to {c.max():.2f} (one pair's standard "
          f"error at {a.rho_seeds} seeds: about {1 / (a.rho_seeds - 3) ** 0.5:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="sample seeds per model (eval.repeats)")
    ap.add_argument("--alpha", type=float, default=0.05, help="the new rule's level (register.alpha)")
    ap.add_argument("--min-improvement", type=float, default=0.0,
                    help="the new rule's practical minimum (register.min_improvement)")
    ap.add_argument("--old-margin", type=float, default=1.0, help="the old rule's margin")
    ap.add_argument("--skew", type=float, default=1.5, help="skew of the per-seed FIDs")
    ap.add_argument("--rho", type=float, default=0.0,
                    help="correlation of two models' FIDs on the same seed")
    ap.add_argument("--reps", type=int, default=20_000, help="comparisons per cell")
    ap.add_argument("--challengers", type=int, default=20)
    ap.add_argument("--sequences", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure-rho", nargs="+", metavar="GENERATOR",
                    help="instead: measure the correlation of these generators' per-seed FIDs")
    ap.add_argument("--rho-seeds", type=int, default=30)
    ap.add_argument("--rho-seed", type=int, default=100, help="first seed of --measure-rho")
    ap.add_argument("--prepared", default="outputs/prepare")
    a = ap.parse_args()
    print(f"{describe()}\n")
    t0 = time.perf_counter()
    if a.measure_rho:
        measure_rho(a)
    else:
        rng = np.random.default_rng(a.seed)
        power_table(a, rng)
        winners_curse(a, rng)
    print(f"\n({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
