"""prepare: load and split the data, train the classifier extractor, real statistics, FID floors.

Reads params: data.*, eval.features, eval.inception_weights, eval.inception_dims,
eval.classifier_epochs, eval.batch_size. Writes the splits, features/ (the classifier, the
real statistics of both splits per extractor in pytorch-fid's .npz format with the features
next to them as <stem>.features.npy for KID and precision/recall, cached by key, index.json
naming the current ones, and floor-draws.npz: the FIDs of the two reference generators'
draws) and metrics.json: classifier accuracy; at the held-out count, the mean FID of a
generator that copies the training set (``fid_copier``) and of one that draws new real
images (``fid_novel``), each with its standard error; the held-out images' own FID.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from resgan.config import ConfigError
from resgan.data import is_labelled, load_dataset, save_split, split
from resgan.metrics.cache import cached_stats, extractor_key, fingerprint, load_features
from resgan.metrics.classifier import save_classifier, train_classifier
from resgan.metrics.features import extract_all
from resgan.metrics.fid import (calculate_frechet_distance, copier_draws, mean_and_se,
                              novel_draws)
from resgan.stage import eval_extractor, features_dir, read_params, run, write_json


def main() -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="outputs/prepare", help="output folder")
    args = ap.parse_args()
    cfg = read_params()
    d, e = cfg.data, cfg.eval
    t0 = time.perf_counter()
    x, y = load_dataset(d.dataset, d.resolution, root=d.root, download=d.download)
    labelled = is_labelled(y)
    if not labelled and e.features == "classifier":
        raise ConfigError(f"eval.features: 'classifier' needs a labelled dataset and "
                          f"{d.dataset} at {d.root} has no labels; allowed here: inception")
    x_tr, y_tr, x_te, y_te = split(x, y, d.test_fraction, d.seed)
    save_split(f"{args.out}/train.npz", x_tr, y_tr)
    save_split(f"{args.out}/test.npz", x_te, y_te)
    print(f"prepare: {d.dataset} at {d.resolution}px: {len(x_tr)} train, {len(x_te)} test "
          f"images, {x_tr.shape[1]} channel(s), {'labelled' if labelled else 'no labels'}")

    feats = features_dir(args.out)
    metrics = {"stats_samples": len(x_tr), "floor_samples": len(x_te), "features": e.features}
    names = [e.features]
    if labelled:  # the classifier also measures the per-epoch FID of trials and training
        tr, te = torch.from_numpy(x_tr), torch.from_numpy(x_te)
        net, acc = train_classifier(tr, torch.from_numpy(y_tr), te, torch.from_numpy(y_te),
                                    epochs=e.classifier_epochs, seed=d.seed)
        save_classifier(net, feats / "classifier.pt", test_accuracy=acc,
                        resolution=d.resolution, dataset=d.dataset)
        print(f"prepare: classifier test accuracy {acc:.4f}")
        metrics["classifier_accuracy"] = round(acc, 6)
        names = list(dict.fromkeys(["classifier", e.features]))
    index, stats = {}, {}
    for name in names:
        index[name], stats[name] = real_statistics(args.out, e, name, d, x_tr, x_te)
    metrics.update(references(feats, index[e.features], stats[e.features], len(x_te), d.seed))
    write_json(feats / "index.json", index)
    m = metrics
    print(f"prepare: at {len(x_te)} samples ({e.features} features), a generator copying the "
          f"training set scores FID {m['fid_copier']:.3f} ± {m['fid_copier_se']:.3f}, one of new "
          f"real images {m['fid_novel']:.3f} ± {m['fid_novel_se']:.3f} (means over "
          f"{m['fid_copier_draws']} and {m['fid_novel_draws']} draws ± standard error); the "
          f"{len(x_te)} held-out images: {m['fid_heldout']:.3f}")
    write_json(f"{args.out}/metrics.json", {**metrics, "seconds": round(time.perf_counter() - t0, 2)})
    acc = f"classifier accuracy {metrics['classifier_accuracy']:.4f}; " if labelled else ""
    return (f"{len(x_tr)} train, {len(x_te)} test images; {acc}copier FID {m['fid_copier']:.3f}, "
            f"new images {m['fid_novel']:.3f} at {len(x_te)} samples ({e.features} features)")


def real_statistics(out: str, e, name: str, d, x_tr: np.ndarray, x_te: np.ndarray):
    """Real features and statistics of both splits for one extractor, reused when already
    computed (keyed by dataset, resolution, split content and extractor; the features file is
    found from the statistics file's name, cache.features_path). Returns (the index entry,
    {split: (mu, sigma)})."""
    feats = features_dir(out)
    ex_key = extractor_key(name, classifier_path=feats / "classifier.pt",
                           inception_weights=e.inception_weights, dims=e.inception_dims)
    extractor = None
    entry, stats = {"dims": ex_key["dims"]}, {}
    for split_name, images in (("train", x_tr), ("test", x_te)):
        def compute(images=images):
            nonlocal extractor
            extractor = extractor or eval_extractor(out, e, name)
            return extract_all(extractor, torch.from_numpy(images).split(e.batch_size))

        key = {"dataset": d.dataset, "resolution": d.resolution, "split": split_name,
               "images": fingerprint(images), **ex_key}
        stats[split_name], path, reused = cached_stats(feats, key, compute)
        entry[split_name] = path.name
        print(f"prepare: {split_name} statistics, {name} features: "
              f"{'reused' if reused else 'computed'} {path.name}")
    return entry, stats


def references(feats: Path, entry: dict, stats: dict, n: int, seed: int) -> dict:
    """Two references at the held-out count ``n`` (resgan.metrics.fid): a generator that
    copies the training set (i.i.d. draws of its images: the lowest FID to expect) and one
    that draws new real images (random non-stratified splits of all the real images), their
    draws saved to floor-draws.npz. The held-out images' own FID is kept beside them: with a
    label-stratified split their class proportions are exact, which no generator's samples
    are, so it is lower than either (docs/benchmarks.md, bench/floor.py)."""
    print(f"prepare: the references: FID of {n} images copied from the training set, and of "
          f"{n} new real images ...", flush=True)
    train_feats = load_features(feats / entry["train"])
    copier = copier_draws(train_feats, *stats["train"], n, seed=seed)
    novel = novel_draws(train_feats, load_features(feats / entry["test"]), seed=seed)
    np.savez(feats / "floor-draws.npz", copier=copier, novel=novel)
    heldout = float(calculate_frechet_distance(*stats["test"], *stats["train"]))
    (copier_fid, copier_se), (novel_fid, novel_se) = map(mean_and_se, (copier, novel))
    return dict(fid_copier=copier_fid, fid_copier_se=copier_se, fid_copier_draws=len(copier),
                fid_novel=novel_fid, fid_novel_se=novel_se, fid_novel_draws=len(novel),
                fid_heldout=heldout, feature_dims=entry["dims"])


if __name__ == "__main__":
    run(main)
