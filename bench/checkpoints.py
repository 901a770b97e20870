"""Benchmark (g): the train stage's checkpoints, scored like the evaluate stage.

Which epoch of a training run was best, and can the per-epoch monitoring FID tell? Every
checkpoint of one Ray Train run (``train.checkpoint_every`` epochs apart) has its G_ema
scored at the held-out count (outputs/prepare/metrics.json) over ``--repeats``
sample seeds twice: from ``eval.seed`` (the evaluate stage's seeds) and from
``--other-seed`` (seeds neither evaluate nor the monitoring FID use), next to the
monitoring FID the run recorded at that epoch (train.fid_samples samples, one seed). The
two sets of sample seeds show how far the evaluate stage's ratio to the copier reference moves with
the samples alone.

Run after `make run`:  .venv/bin/python bench/checkpoints.py [RUN_DIR]
(RUN_DIR: a Ray Train run under ray.storage_path; default: the newest train-* there)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resgan.machine import describe
from resgan.metrics.scoring import Scorer
from resgan.stage import read_json, read_params
from resgan.training import checkpoint as ckpt_io


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="a Ray Train run folder (default: the newest train-*)")
    ap.add_argument("--prepared", default="outputs/prepare")
    ap.add_argument("--repeats", type=int, default=10, help="sample seeds per score (default: %(default)s)")
    ap.add_argument("--other-seed", type=int, default=1000,
                    help="first seed of the second set of sample seeds (default: %(default)s)")
    args = ap.parse_args()
    cfg = read_params()
    if args.run:
        run = Path(args.run)
    else:
        runs = sorted((p for p in Path(cfg.ray.storage_path).glob("train-*") if p.is_dir()),
                      key=lambda p: p.stat().st_mtime)
        if not runs:
            raise SystemExit(f"no train-* run under {cfg.ray.storage_path}: run `make run` first")
        run = runs[-1]
    ckpts = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())
    if not ckpts:
        raise SystemExit(f"{run}: no checkpoint_* folders")
    prep = read_json(f"{args.prepared}/metrics.json")
    n, floor, e = prep["floor_samples"], prep["fid_copier"], cfg.eval
    scorers = [Scorer.from_eval(args.prepared, e, num_samples=n, seed=s, repeats=args.repeats)
               for s in (e.seed, args.other_seed)]
    print(f"\n{describe()}; run {run.name}; FID at {n} samples (a copier of the training set {floor:.2f}), "
          f"{args.repeats} sample seeds each: mean ± standard error (x the copier)\n")
    print(f"| epoch | monitoring FID ({cfg.train.fid_samples} samples, seed {cfg.train.seed}) "
          f"| seeds {e.seed}.. | seeds {args.other_seed}.. |")
    print("| ---: | ---: | ---: | ---: |")
    for path in ckpts:
        state = ckpt_io.load(path)
        G = ckpt_io.generator_from(state)
        cells = []
        for s in scorers:
            score = s.score(G, fid_only=True)
            cells.append(f"{score.fid:.2f} ± {score.fid_se:.2f} ({score.fid / floor:.2f}x)")
        monitor = state.get("metrics", {}).get("fid", float("nan"))
        print(f"| {state['epoch']} | {monitor:.2f} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
