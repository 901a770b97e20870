"""prepare: load and split the data, train the classifier extractor, real statistics, FID floor.

Reads params: data.*, eval.features, eval.inception_weights, eval.inception_dims,
eval.classifier_epochs, eval.batch_size. Writes the splits, features/ (the classifier, the real statistics of both
splits per extractor in pytorch-fid's .npz format with the features next to them as
<stem>.features.npy for KID and precision/recall, cached by key, and index.json naming the
current ones) and metrics.json (classifier accuracy; the FID floor, what a generator that
samples the training images exactly scores at the held-out count, with its standard error;
the held-out images' own FID).
"""

from __future__ import annotations

import argparse
import time

import torch

from resgan.stage import eval_extractor, features_dir, read_params, run, write_json
from resgan.config import ConfigError
from resgan.data import is_labelled, load_dataset, save_split, split
from resgan.metrics.cache import cached_stats, extractor_key, fingerprint, load_features
from resgan.metrics.classifier import save_classifier, train_classifier
from resgan.metrics.features import extract_all
from resgan.metrics.fid import calculate_frechet_distance, sampling_floor


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

    # Real features and statistics per (dataset, split, extractor, dims), reused when already
    # computed; the features file is found from the statistics file's name (cache.features_path).
    data_key = {"dataset": d.dataset, "resolution": d.resolution}
    index = {}
    for name in names:
        ex_key = extractor_key(name, classifier_path=feats / "classifier.pt",
                               inception_weights=e.inception_weights, dims=e.inception_dims)
        extractor = None
        stats = {}
        for split_name, images in (("train", x_tr), ("test", x_te)):
            def compute(images=images):
                nonlocal extractor
                extractor = extractor or eval_extractor(args.out, e, name)
                return extract_all(extractor, torch.from_numpy(images).split(e.batch_size))

            key = {**data_key, "split": split_name, "images": fingerprint(images), **ex_key}
            stats[split_name], path, reused = cached_stats(feats, key, compute)
            index.setdefault(name, {"dims": ex_key["dims"]})[split_name] = path.name
            print(f"prepare: {split_name} statistics, {name} features: "
                  f"{'reused' if reused else 'computed'} {path.name}")
        if name == e.features:
            # The floor: the FID that a generator sampling the training images exactly is
            # expected to score at the held-out count (resgan.metrics.fid.sampling_floor).
            # The held-out images' own FID is kept beside it: with a label-stratified split
            # their class proportions are exact, which no generator's samples are, so it is
            # lower than a perfect generator scores (docs/benchmarks.md (i), bench/floor.py).
            print(f"prepare: the floor: FID of {len(x_te)} i.i.d. draws of the training images, "
                  f"{name} features ...", flush=True)
            floor, floor_se, draws = sampling_floor(
                load_features(feats / index[name]["train"]), *stats["train"], len(x_te), seed=d.seed)
            heldout = float(calculate_frechet_distance(*stats["test"], *stats["train"]))
            metrics.update(fid_floor=floor, fid_floor_se=floor_se, fid_floor_draws=draws,
                           fid_floor_heldout=heldout, feature_dims=ex_key["dims"])
    write_json(feats / "index.json", index)
    print(f"prepare: FID floor {floor:.3f} ± {floor_se:.3f} ({e.features} features, {len(x_te)} "
          f"samples, mean of {draws} draws); the {len(x_te)} held-out images: {heldout:.3f}")
    write_json(f"{args.out}/metrics.json", {**metrics, "seconds": round(time.perf_counter() - t0, 2)})
    acc = f"classifier accuracy {metrics['classifier_accuracy']:.4f}; " if labelled else ""
    return (f"{len(x_tr)} train, {len(x_te)} test images; {acc}FID floor {floor:.3f} at "
            f"{len(x_te)} samples ({e.features} features)")


if __name__ == "__main__":
    run(main)
