"""Benchmark (i): what real images score at the held-out count, and the two references
prepare computes there: a generator copying the training set and one of new real images.

The FID of N images against the training statistics, with the extractor of the evaluate
stage, for sets of real images drawn in several ways (``--draws`` each), next to the
references that prepare wrote (``resgan.metrics.fid.copier_draws`` and ``novel_draws``) and,
for generator files given
as arguments, their FID over the evaluate stage's sample seeds. It also splits the
features' total variance into its between-class part (labelled data): the share of the
sample mean's error that a label-stratified set does not have and a generator's samples do.

Run after `dvc repro prepare`:
    .venv/bin/python bench/floor.py [outputs/train/generator.pt ...]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from resgan.data import is_labelled, load_split
from resgan.machine import describe
from resgan.metrics.features import extract_all
from resgan.metrics.fid import fid_from_features
from resgan.metrics.scoring import Scorer
from resgan.stage import read_json, read_params
from resgan.training import checkpoint as ckpt_io


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("generators", nargs="*", help="generator files (outputs/train/generator.pt, ...)")
    ap.add_argument("--prepared", default="outputs/prepare")
    ap.add_argument("--draws", type=int, default=500, help="sets drawn per way (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = read_params()
    prep = read_json(f"{args.prepared}/metrics.json")
    n = prep["floor_samples"]
    scorer = Scorer.from_eval(args.prepared, cfg.eval, num_samples=n)
    mu, sigma = scorer.ref
    train = np.asarray(scorer.ref_features, dtype=np.float64)
    _, y_tr = load_split(f"{args.prepared}/train.npz")
    x_te, _ = load_split(f"{args.prepared}/test.npz")
    test = extract_all(scorer.extract, x_te.split(cfg.eval.batch_size))
    rng = np.random.default_rng(args.seed)
    labels = y_tr.numpy() if is_labelled(y_tr.numpy()) else None

    def stratified() -> np.ndarray:
        classes, counts = np.unique(labels, return_counts=True)
        take = np.round(counts / counts.sum() * n).astype(int)
        return np.concatenate([rng.choice(np.flatnonzero(labels == c), k, replace=False)
                               for c, k in zip(classes, take)])

    draws = [  # (what, one set of features), in the order the table lists them
        ("subsets of the training images, label-stratified", lambda: train[stratified()]),
        ("subsets of the training images, at random (no repeats)",
         lambda: train[rng.choice(len(train), n, replace=False)]),
        ("i.i.d. draws of the training images (what the copier reference averages)",
         lambda: train[rng.integers(0, len(train), n)]),
        ("i.i.d. draws of the held-out images", lambda: test[rng.integers(0, len(test), n)]),
    ][0 if labels is not None else 1:]
    print(f"\n{describe()}; {cfg.data.dataset}, {cfg.eval.features} features ({train.shape[1]}-d), "
          f"FID of {n} images against the training statistics ({len(train)} images)\n")
    print("| images | sets | FID: mean | spread (sd) | 10 % / 50 % / 90 % |")
    print("| :--- | ---: | ---: | ---: | ---: |")
    print(f"| the held-out images (one set; label-stratified when labelled) | 1 "
          f"| {fid_from_features(test, mu, sigma):.3f} | | |")

    def row(label: str, fids) -> None:
        q = np.quantile(fids, [0.1, 0.5, 0.9])
        print(f"| {label} | {len(fids)} | {statistics.fmean(fids):.3f} | {statistics.stdev(fids):.3f} "
              f"| {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} |")

    for label, draw in draws:
        row(label, [fid_from_features(draw(), mu, sigma) for _ in range(args.draws)])
    for ref, what in (("copier", "copying the training set"), ("novel", "of new real images")):
        print(f"| **a generator {what}** (prepare: `fid_{ref}` ± its standard error) | "
              f"{prep[f'fid_{ref}_draws']} | **{prep[f'fid_{ref}']:.3f}** ± "
              f"{prep[f'fid_{ref}_se']:.3f} | | |")
    for path in args.generators:  # over the evaluate stage's sample seeds
        score = scorer.score(ckpt_io.generator_from(ckpt_io.load(path)), fid_only=True)
        row(f"generator {path} ({cfg.eval.repeats} sample seeds)", score.per_seed)

    if labels is not None:
        total = float(np.trace(sigma))
        between = sum((labels == c).mean() * float(np.sum((train[labels == c].mean(0) - mu) ** 2))
                      for c in np.unique(labels))
        print(f"\ntrace of the training features' covariance {total:.1f}, of it between the "
              f"classes {between:.1f} ({between / total:.0%}): an i.i.d. set of {n} has its mean "
              f"off by {total / n:.2f} in expectation (squared), {between / n:.2f} of it from its "
              f"class proportions, which a label-stratified set has exact.")


if __name__ == "__main__":
    main()
