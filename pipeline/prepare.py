"""prepare: split the data, train the classifier extractor, cache real statistics, FID floor.

Reads params: data.*, eval.features, eval.inception_weights, eval.classifier_epochs.
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import read_params, run, stats_path, write_json
from resgan.data import load_dataset, save_split, split
from resgan.metrics.classifier import save_classifier, train_classifier
from resgan.metrics.features import build_extractor, extract_all
from resgan.metrics.fid import feature_stats, fid_from_features, save_stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="outputs/prepare", help="output folder")
    args = ap.parse_args()
    cfg = read_params()
    d, e = cfg.data, cfg.eval
    t0 = time.perf_counter()
    x, y = load_dataset(d.dataset, d.resolution)
    x_tr, y_tr, x_te, y_te = split(x, y, d.test_fraction, d.seed)
    save_split(f"{args.out}/train.npz", x_tr, y_tr)
    save_split(f"{args.out}/test.npz", x_te, y_te)
    print(f"prepare: {d.dataset} at {d.resolution}px: {len(x_tr)} train, {len(x_te)} test images")

    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a) for a in (x_tr, y_tr, x_te, y_te))
    net, acc = train_classifier(x_tr, y_tr, x_te, y_te, epochs=e.classifier_epochs, seed=d.seed)
    save_classifier(net, f"{args.out}/classifier.pt", test_accuracy=acc,
                    resolution=d.resolution, dataset=d.dataset)
    print(f"prepare: classifier test accuracy {acc:.4f}")

    # Real statistics, once per (dataset split, extractor), in pytorch-fid's .npz format.
    # The classifier's are always made: trials and training monitor FID with it.
    floor = None
    for name in dict.fromkeys(["classifier", e.features]):
        extractor = build_extractor(name, classifier_path=f"{args.out}/classifier.pt",
                                    inception_weights=e.inception_weights)
        feats_tr = extract_all(extractor, x_tr.split(e.batch_size))
        mu, sigma = feature_stats(feats_tr)
        save_stats(stats_path(args.out, name), mu, sigma)
        if name == e.features:
            # The floor: held-out real images against the same statistics. No model can be
            # expected to beat it at the same sample count.
            floor = fid_from_features(extract_all(extractor, x_te.split(e.batch_size)), mu, sigma)
            dims = int(feats_tr.shape[1])
    print(f"prepare: FID floor {floor:.3f} ({e.features} features, {len(x_te)} held-out images)")
    write_json(f"{args.out}/metrics.json", {
        "classifier_accuracy": round(acc, 6), "fid_floor": floor, "floor_samples": len(x_te),
        "stats_samples": len(x_tr), "features": e.features, "feature_dims": dims,
        "seconds": round(time.perf_counter() - t0, 2)})


if __name__ == "__main__":
    run(main)
