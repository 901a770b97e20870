"""Benchmark (f): quality against images seen, for one training configuration.

Trains G and D with the Ray-free loop in this process (no Ray, no MLflow) on prepare's
training split and records, every ``--every`` epochs, the FID of G_ema at prepare's held-out
count (``floor_samples``, so the copier reference (a generator copying the training set) of
outputs/prepare/metrics.json is on the same scale), classifier features against the training
statistics, one sample seed, with the training minutes so far (images / the loop's own
images/s: the scoring is not counted). That answers "how
many images does this configuration need to get within k x the copier reference", the question
behind the default train.epochs. At the end the final G_ema is scored as the evaluate stage
scores it (the held-out count, ``--final-repeats`` sample seeds from eval.seed: mean ±
standard error), which is the figure to compare with `make run`'s champions.
Configurations are params.yaml's with the flags below.

Run after `dvc repro prepare`, e.g.:
    .venv/bin/python bench/quality_curve.py --loss hinge --epochs 250 --out curve.json
Two at once with --threads 1 each use a 2-core machine fully.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from resgan.config import replace
from resgan.metrics.scoring import Scorer
from resgan.stage import monitor_ref, read_json, read_params
from resgan.training import checkpoint as ckpt_io
from resgan.training.loop import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--residual", choices=["true", "false"], default="true")
    ap.add_argument("--loss", choices=["bce", "hinge", "wgan-gp"], default="hinge")
    ap.add_argument("--lr-g", type=float, default=2e-4)
    ap.add_argument("--lr-d", type=float, default=2e-4)
    ap.add_argument("--epochs", type=int, default=250)
    ap.add_argument("--n-dis", type=int, default=1)
    ap.add_argument("--augment", default="none")
    ap.add_argument("--decay", choices=["none", "linear"], default="none")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--final-repeats", type=int, default=10,
                    help="sample seeds of the final score, as eval.repeats (0: none; default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="train.seed (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    ap.add_argument("--every", type=int, default=1, help="epochs between scores (default: %(default)s)")
    ap.add_argument("--prepared", default="outputs/prepare")
    ap.add_argument("--out", required=True, help="JSON: the settings and one row per epoch")
    ap.add_argument("--save", help="also write the final generator file here (as outputs/train/generator.pt)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = replace(read_params(), model={"depth": a.depth, "residual": a.residual == "true",
                                        "channels": a.channels},
                  train={"batch_size": a.batch_size, "loss": a.loss, "lr_g": a.lr_g, "lr_d": a.lr_d, "epochs": a.epochs,
                         "n_dis": a.n_dis, "augment": a.augment, "lr_decay": a.decay, "seed": a.seed,
                         "checkpoint_every": a.every, "num_workers": 1})
    prep = read_json(f"{a.prepared}/metrics.json")
    floor = prep["fid_copier"]
    n = prep["floor_samples"]
    per_epoch = prep["stats_samples"] // a.batch_size * a.batch_size
    monitor = monitor_ref(a.prepared, cfg.eval).monitor(n, seed=cfg.eval.seed)
    result: dict = {"settings": vars(a), "copier": floor, "floor_samples": n, "rows": []}
    t0 = time.time()
    train_s = 0.0

    def write() -> None:
        Path(a.out).write_text(json.dumps(result, indent=1))

    def report(m: dict, state) -> None:
        nonlocal train_s
        train_s += per_epoch / m["images_per_s"]
        if state is None:
            return
        fid = monitor(ckpt_io.generator_from(state))
        result["rows"].append({"epoch": m["epoch"], "images": m["epoch"] * per_epoch, "fid": fid,
                               "x_copier": fid / floor, "images_per_s": m["images_per_s"],
                               "train_minutes": train_s / 60, "seconds": time.time() - t0})
        print(f"epoch {m['epoch']}: FID {fid:.3f} = {fid / floor:.2f}x the copier, "
              f"{train_s / 60:.1f} training minutes, {m['images_per_s']:.0f} images/s", flush=True)
        write()

    state = fit(cfg, data_path=f"{a.prepared}/train.npz", report=report)
    if a.save:
        ckpt_io.export_generator(state, a.save)
    if a.final_repeats > 0:
        scorer = Scorer.from_eval(a.prepared, cfg.eval, num_samples=prep["floor_samples"],
                                  repeats=a.final_repeats)
        score = scorer.score(ckpt_io.generator_from(state), fid_only=True)
        result["final"] = {"fid": score.fid, "fid_se": score.fid_se, "per_seed": score.per_seed, "x_copier": score.fid / floor,
                           "x_copier_se": score.fid_se / floor}
        write()
        print(f"final G_ema: FID {score.fid:.3f} ± {score.fid_se:.3f} = "
              f"{score.fid / floor:.2f}x ± {score.fid_se / floor:.2f} the copier reference", flush=True)


if __name__ == "__main__":
    main()
