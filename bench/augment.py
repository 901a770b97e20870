"""Probe: differentiable augmentation of D's inputs (train.augment), policy by policy.

Trains the Ray-free loop (resgan.training.loop.fit, in this process, on the GPU when there
is one) once per policy and training seed, on prepare's training split with params.yaml's
model and train sections (keys set to "tune": outputs/tune/best.json's values, else the
config defaults) and the same images seen (--epochs x train.batch_size), then scores every
final G_ema as the evaluate stage does (eval extractor, eval.num_samples samples, the FID the
mean over eval.repeats sample seeds). Prints a Markdown table: FID ± its spread over the
sample seeds, the ratio to `none` (below 1: the augmentation helps), ADA's final p.

Run after `dvc repro prepare`:
  .venv/bin/python bench/augment.py [--epochs 30] [--policies none translation ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import get_args

import torch

from resgan.stage import read_params  # noqa: E402

from resgan.config import SEARCHABLE, AugmentPolicy, Config, load_config, replace  # noqa: E402
from resgan.machine import describe  # noqa: E402
from resgan.training.job import TuneChoice  # noqa: E402


def fixed_config(cfg: Config, best_path: str, epochs: int) -> Config:
    """params.yaml's config with every "tune" key set (best.json, else the default) and
    ``epochs`` long (tune.epochs capped to it, as the config requires)."""
    best = TuneChoice.read(best_path).point if Path(best_path).exists() else {}
    defaults = load_config({})
    point = {k: best.get(k, getattr(getattr(defaults, SEARCHABLE[k]), k)) for k in cfg.searched()}
    cfg = cfg.with_point(point)
    tune_epochs = min(cfg.tune.epochs, epochs)
    return replace(cfg, train={"epochs": epochs, "checkpoint_every": epochs, "sample_every": epochs},
                   tune={"epochs": tune_epochs, "grace_period": min(cfg.tune.grace_period, tune_epochs)})


def train_one(cfg: Config, data: str, device: str) -> tuple[dict, list[dict], float]:
    """One run of the loop: its final state, every epoch's metrics, the wall time."""
    from resgan.training.loop import fit

    reports: list[dict] = []
    t0 = time.perf_counter()
    state = fit(cfg, data_path=data, report=lambda m, s: reports.append(m), device=device)
    return state, reports, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--best", default="outputs/tune/best.json", help="values for the 'tune' keys")
    ap.add_argument("--policies", nargs="+", default=list(get_args(AugmentPolicy)),
                    choices=get_args(AugmentPolicy), help="train.augment values (default: all)")
    ap.add_argument("--epochs", type=int, help="epochs per run (default: train.epochs)")
    ap.add_argument("--seeds", type=int, nargs="+", help="training seeds (default: train.seed)")
    ap.add_argument("--num-samples", type=int, help="samples per FID (default: eval.num_samples)")
    ap.add_argument("--repeats", type=int, help="sample seeds per FID (default: eval.repeats)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not Path(f"{args.prepared}/train.npz").exists():
        raise SystemExit(f"error: {args.prepared}/train.npz not found: run `dvc repro prepare` first")
    params = read_params()
    epochs = args.epochs or params.train.epochs
    cfg = fixed_config(params, args.best, epochs)
    seeds = args.seeds or [cfg.train.seed]
    from resgan.metrics.scoring import Scorer
    from resgan.training import checkpoint as ckpt_io

    e = cfg.eval
    scorer = Scorer.from_eval(args.prepared, e, **{k: v for k, v in (
        ("num_samples", args.num_samples), ("repeats", args.repeats)) if v is not None})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = f"{args.prepared}/train.npz"
    rows = []
    for policy in args.policies:
        for seed in seeds:
            run_cfg = replace(cfg, train={"augment": policy, "seed": seed})
            state, reports, wall = train_one(run_cfg, data, device)
            score = scorer.score(ckpt_io.generator_from(state, device), device=device)
            rows.append({"policy": policy, "seed": seed, "fid": score.fid, "fid_std": score.fid_std,
                         "augment_p": reports[-1].get("augment_p"), "wall_s": wall,
                         # after the first epoch (warm-up), as bench/throughput.py
                         "images_per_s": statistics.fmean(m["images_per_s"] for m in reports[1:] or reports)})
            print(f"augment {policy}, seed {seed}: FID {score.fid:.3f} ± {score.fid_std:.3f} "
                  f"in {wall:.0f} s", flush=True)
    t, p = cfg.train, scorer.protocol
    print(f"\n{describe()}; {cfg.data.dataset} {cfg.data.resolution}x{cfg.data.resolution}, "
          f"depth {cfg.model.depth}, {'residual' if cfg.model.residual else 'plain'}, "
          f"{cfg.model.channels} channels, loss {t.loss}, lr_g {t.lr_g:g}, lr_d {t.lr_d:g}, "
          f"batch {t.batch_size}, {epochs} epochs per run (the same images for every policy); "
          f"FID: {p.features} features, {p.num_samples} samples x {p.repeats} sample seeds "
          f"(± their standard deviation)\n")
    base = {r["seed"]: r["fid"] for r in rows if r["policy"] == "none"}
    print("| train.augment | seed | FID | × none | final p | images/s | wall time |")
    print("| :--- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ratio = f"{r['fid'] / base[r['seed']]:.2f}" if r["seed"] in base else "n/a"
        p_end = "" if r["augment_p"] is None else f"{r['augment_p']:.3f}"
        print(f"| {r['policy']} | {r['seed']} | {r['fid']:.2f} ± {r['fid_std']:.2f} | {ratio} | "
              f"{p_end} | {r['images_per_s']:.0f} | {r['wall_s']:.0f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": describe(), "epochs": epochs,
                                               "protocol": p.describe(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
