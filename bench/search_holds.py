"""Benchmark (m): does the search's pick hold at full training, and does the gate see it?

Tune ranks its trials after ``tune.epochs``; the train stage then continues only the pick to
``train.epochs``. This script checks that choice after a `dvc repro`: it trains two other
configurations of the same search from scratch to ``train.epochs`` (the same loop as the
train stage, Ray-free, in two processes at once with one torch thread each), then scores the
champion (outputs/train/generator.pt) and both as the evaluate stage scores them
(``eval.num_samples`` samples, ``eval.repeats`` sample seeds from ``eval.seed``: the same
seeds for all three) and puts each against the pick with the registry's gate (the one-sided
paired t-test at ``register.alpha``, ``resgan.metrics.significance.compare``), both ways.

By default the two others are the runner-up among the trials that ran the whole search
budget and the worst trial of all (ASHA's first stop, when it stopped one); ``--trials``
names them instead. Needs `dvc repro` (outputs/tune/trials.csv and outputs/train).

    .venv/bin/python bench/search_holds.py --out search_holds.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from resgan.stage import monitor_ref, read_json, read_params
from resgan.config import replace
from resgan.training.job import TuneChoice


def _others(rows: list[dict], pick: str) -> list[dict]:
    """The runner-up among finished trials and the worst trial of all (not the pick)."""
    finished = [r for r in rows if r["status"] == "finished" and r["trial_id"] != pick]
    scored = [r for r in rows if r["trial_id"] != pick and math.isfinite(float(r["fid"]))]
    runner_up = min(finished, key=lambda r: float(r["fid"]))
    worst = max((r for r in scored if r is not runner_up), key=lambda r: float(r["best_fid"]))
    return [runner_up, worst]


def _train(row: dict, prepared: str, params: str, out: str) -> dict:
    """Train one trial's configuration from scratch to train.epochs (one torch thread)."""
    import torch

    from resgan.training import checkpoint as ckpt_io
    from resgan.training.loop import fit

    torch.set_num_threads(1)
    base = read_params(params)
    cfg = replace(base, model={"depth": int(row["depth"]), "residual": row["residual"] == "True"},
                  train={"loss": row["loss"], "lr_g": float(row["lr_g"]), "lr_d": float(row["lr_d"]),
                         "num_workers": 1, "checkpoint_every": base.train.epochs})
    curve: list[dict] = []
    t0 = time.time()
    state = fit(cfg, data_path=f"{prepared}/train.npz",
                report=lambda m, _s: curve.append({"epoch": m["epoch"], "fid": m.get("fid"),
                                                   "images_per_s": m["images_per_s"]}),
                fid_ref=monitor_ref(prepared, cfg.eval))
    path = Path(out) / f"{row['trial_id']}.pt"
    ckpt_io.export_generator(state, path)
    return {"trial": row, "generator": str(path), "curve": curve, "seconds": time.time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", default="outputs/prepare")
    ap.add_argument("--tuned", default="outputs/tune", help="tune's output folder (trials.csv, best.json)")
    ap.add_argument("--trained", default="outputs/train", help="train's output folder (the pick's generator)")
    ap.add_argument("--trials", nargs=2, metavar="ID", help="the two trial ids to train (default: see above)")
    ap.add_argument("--generators", default="outputs/search_holds", help="where the others' generators go")
    ap.add_argument("--out", required=True, help="JSON: the trials, their curves, scores and verdicts")
    a = ap.parse_args()

    from resgan.metrics.scoring import Scorer
    from resgan.metrics.significance import compare
    from resgan.training import checkpoint as ckpt_io

    cfg = read_params(a.params)
    best = TuneChoice.read(f"{a.tuned}/best.json")
    with open(f"{a.tuned}/trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_id = {r["trial_id"]: r for r in rows}
    others = [by_id[t] for t in a.trials] if a.trials else _others(rows, best.trial_id)
    Path(a.generators).mkdir(parents=True, exist_ok=True)
    print(f"pick {best.trial_id}: FID {best.fid:.3f} at epoch {best.trial_epochs}; training "
          + ", ".join(f"{r['trial_id']} (depth {r['depth']}, residual {r['residual']}, {r['loss']}, "
                      f"lr_g {float(r['lr_g']):.2e}, lr_d {float(r['lr_d']):.2e}, {r['status']} at epoch "
                      f"{r['epochs']}, FID {float(r['fid']):.3f})" for r in others)
          + f" to epoch {cfg.train.epochs}, two at once", flush=True)
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        trained = list(pool.map(_train, others, [a.prepared] * 2, [a.params] * 2, [a.generators] * 2))
    for t in trained:
        last = t["curve"][-1]
        print(f"{t['trial']['trial_id']}: {t['seconds'] / 60:.1f} min, monitor FID {last['fid']:.3f} "
              f"at epoch {last['epoch']}", flush=True)

    scorer = Scorer.from_eval(a.prepared, cfg.eval)
    pick = scorer.score(ckpt_io.generator_from(ckpt_io.load(f"{a.trained}/generator.pt")), fid_only=True)
    result = {"params": a.params, "pick": {"trial": best, "fid": pick.fid, "fid_se": pick.fid_se,
                                           "per_seed": pick.per_seed}, "others": []}
    floor = read_json(f"{a.prepared}/metrics.json")
    print(f"pick: FID {pick.fid:.3f} ± {pick.fid_se:.3f} (SE over {len(pick.per_seed)} sample seeds)")
    for t in trained:
        s = scorer.score(ckpt_io.generator_from(ckpt_io.load(t["generator"])), fid_only=True)
        better = compare(s.per_seed, pick.per_seed, paired=True, alpha=cfg.register.alpha)
        worse = compare(pick.per_seed, s.per_seed, paired=True, alpha=cfg.register.alpha)
        result["others"].append({**t, "fid": s.fid, "fid_se": s.fid_se, "per_seed": s.per_seed,
                                 "pick_better": better.as_dict(), "other_better": worse.as_dict()})
        print(f"{t['trial']['trial_id']}: FID {s.fid:.3f} ± {s.fid_se:.3f}; the pick against it: "
              f"{better.summary()}; it against the pick: {'better' if worse.promote else 'not shown better'} "
              f"(p = {worse.p_value:.3g})", flush=True)
    result["copier"] = {k: floor.get(k) for k in ("fid_copier", "fid_copier_se", "floor_samples")}
    result["pick_lowest"] = all(o["fid"] > pick.fid for o in result["others"])
    copier = floor["fid_copier"]
    print("x the copier: pick " + ", ".join(
        [f"{pick.fid / copier:.2f}"] + [f"{o['trial']['trial_id']} {o['fid'] / copier:.2f}"
                                        for o in result["others"]]), flush=True)
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
