"""ablation: FID for every model.depth x model.residual x seed (x train.augment policy,
`ablation.augment`) of params.yaml's `ablation`.

Every cell trains through the pipeline's own Ray Train loop (one Ray Tune grid, no early
stopping, `ablation.max_concurrent` cells at once) on the prepared data with the same
images seen (ablation.epochs x train.batch_size), the same learning rates (train.lr_g,
train.lr_d) and loss, and is scored with the evaluate stage's extractor and sample count.
Keys params.yaml sets to "tune" (other than the grid's depth and shortcuts) take the values
tune chose for the champion (outputs/tune/best.json).
Writes ablation.md (table), ablation.png (FID against depth) and ablation.json to --out,
and logs them to an MLflow run `ablation` with one nested run per cell.

Run as a DVC pipeline: `make ablation` (`dvc repro studies/ablation8/dvc.yaml`, on the root
params.yaml) or `dvc repro studies/ablation16/dvc.yaml` (16 px, its own params.yaml); by
hand it needs prepare's outputs (`dvc repro prepare`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from resgan.stage import PARAMS, monitor_ref, read_json, read_params, require_batch_fits, run
from resgan import tracking
from resgan.ablation import Cell, summarise, write_report
from resgan.config import ConfigError, replace
from resgan.data import images_per_epoch
from resgan.console import say
from resgan.metrics.scoring import fid_name
from resgan.training.job import with_choice


def _slug(policy: str) -> str:
    """An augment policy in Ray run and MLflow metric names (no "+")."""
    return policy.replace("+", "_")


def _comparable_settings(cfg, prep: dict) -> dict[str, str]:
    """The report's settings that two runs must share for their cells to be compared."""
    t, e, a = cfg.train, cfg.eval, cfg.ablation
    images = images_per_epoch(prep["stats_samples"], t.batch_size) * a.epochs
    return {
        "data": f"{cfg.data.dataset} at {cfg.data.resolution}px, {prep['stats_samples']} "
                f"training images (split seed {cfg.data.seed})",
        "fid_name": fid_name(e.features, e.num_samples),
        "fixed": f"loss {t.loss}, lr_g {t.lr_g:g}, lr_d {t.lr_d:g}, betas ({t.beta1}, {t.beta2}), "
                 f"n_dis {t.n_dis}, batch {t.batch_size}, channels {cfg.model.channels}, "
                 f"z_dim {cfg.model.z_dim}, EMA half-life {t.ema_halflife_kimg} kimg "
                 f"(ramp-up {t.ema_rampup})",
        "images seen per network": f"{images:,} ({a.epochs} epochs x {images // a.epochs:,})",
        "FID": f"{e.features} features, {e.num_samples} samples of G_ema (seed {e.seed}) "
               f"against the training split's statistics; at {prep['floor_samples']} samples a "
               f"generator copying the training set scores {prep['fid_copier']:.2f}, one of new "
               f"real images {prep['fid_novel']:.2f}",
    }


def _earlier_cells(path: str, comparable: dict[str, str]) -> list[Cell]:
    """The cells of an earlier ablation.json, refused in one line unless its comparable
    settings are this run's (checked before any training)."""
    try:
        res = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--merge {path}: cannot read it ({exc})") from None
    for k, v in comparable.items():
        if res.get("settings", {}).get(k) != v:
            raise ConfigError(f"--merge {path}: its '{k}' ({res.get('settings', {}).get(k)}) is not "
                              f"this run's ({v}): the cells would not be comparable")
    return [Cell(**c) for c in res["cells"]]


def _command() -> str:
    """How this run was started: the DVC pipeline that ran it (DVC names the stage in
    DVC_STAGE, e.g. ``studies/ablation8/dvc.yaml:ablation``), else the script's command line."""
    stage = os.environ.get("DVC_STAGE", "")
    if ":" in stage:
        return f"dvc repro {stage.rsplit(':', 1)[0]}"
    return "python pipeline/ablation.py " + " ".join(map(shlex.quote, sys.argv[1:]))


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=PARAMS, help="parameter file (default: %(default)s)")
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--best", default="outputs/tune/best.json",
                    help="tune's choice, for the searched keys besides depth and shortcuts")
    ap.add_argument("--out", default="studies/ablation8/report",
                    help="report folder (default: %(default)s)")
    ap.add_argument("--generators", default="studies/ablation8/outputs/ablation/generators",
                    help="where every cell's final generator is kept (default: %(default)s)")
    ap.add_argument("--render", metavar="JSON",
                    help="only re-write the report from an earlier run's ablation.json")
    ap.add_argument("--merge", metavar="JSON",
                    help="report this run's cells together with an earlier run's ablation.json "
                         "(same data, fixed settings, images seen and FID): its cells that this "
                         "run trains again are replaced, e.g. to add augment rows to the depth study")
    return ap.parse_args()


def _config(args):
    """params.yaml with tune's values for the searched keys besides the grid's, checked
    against the prepared data before any work."""
    cfg = read_params(args.params)
    if tuned := [k for k in cfg.searched() if k not in ("depth", "residual")]:
        if not Path(args.best).exists():
            raise ConfigError(f"{', '.join(tuned)} are set to 'tune': the ablation trains with "
                              f"the values tune chose ({args.best}, from `make run`) or set them "
                              f"in {args.params}")
        cfg = with_choice(cfg, args.best, keys=tuned)
    if not Path(f"{args.prepared}/train.npz").exists():
        raise ConfigError(f"{args.prepared}/train.npz not found: run `dvc repro prepare` first")
    require_batch_fits(cfg, args.prepared)
    return cfg


def _train_cells(cfg, args, parent: str, use_gpu: bool) -> dict[str, list]:
    """One Tune grid per augment policy, each with train.augment set (a trial's point sets
    only model keys and the seed). Returns policy -> its trial rows."""
    from resgan.tuning import grid, run_trials  # imports Ray

    a = cfg.ablation
    augmented = a.augment != ["none"]
    stamp = time.strftime('%Y%m%d-%H%M%S')
    return {policy: run_trials(
        replace(cfg, train={"augment": policy}),
        grid(depth=a.depths, residual=a.residual, seed=a.seeds),
        num_samples=1, epochs=a.epochs, scheduler=None, workers=a.workers_per_trial,
        max_concurrent=a.max_concurrent, seed=0, data_path=f"{args.prepared}/train.npz",
        fid_ref=monitor_ref(args.prepared, cfg.eval), use_gpu=use_gpu, parent_run_id=parent,
        name=f"ablation-{stamp}" + (f"-{_slug(policy)}" if augmented else ""),
        export_dir=args.generators) for policy in a.augment}


def _score_cells(cfg, args, parent: str, runs: dict[str, list]) -> list[Cell]:
    """Every final G_ema scored exactly as the evaluate stage scores the pipeline's (FID
    only), logged to its trial's MLflow run."""
    from resgan.metrics.scoring import Scorer
    from resgan.training import checkpoint as ckpt_io

    e = cfg.eval
    key = fid_name(e.features, e.num_samples)
    scorer = Scorer.from_eval(args.prepared, e)
    c = tracking.client()
    trial_runs = {r.data.tags.get("resgan.trial_id"): r.info.run_id for r in c.search_runs(
        [tracking.experiment_id(cfg.tracking.experiment)],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'")}
    cells = []
    for policy, r in ((p, r) for p, rows in runs.items() for r in rows):
        path = Path(args.generators) / f"{r.trial_id}.pt"
        fid = fid_sd = float("nan")
        if r.status == "finished" and path.exists():
            score = scorer.score(ckpt_io.generator_from(ckpt_io.load(path)), fid_only=True)
            fid, fid_sd = score.fid, score.fid_std
            if r.trial_id in trial_runs:
                c.log_metric(trial_runs[r.trial_id], key, fid)
        cells.append(Cell(depth=r.point["depth"], residual=r.point["residual"],
                          seed=r.point["seed"], fid=fid, images_per_s=r.images_per_s,
                          status=r.status if path.exists() else "failed", augment=policy,
                          fid_sd=fid_sd))
    return cells


def _log_summary(cfg, parent: str, cells: list[Cell], paths: dict, seconds: float) -> None:
    """The report as artifacts of the ablation's MLflow run, each row's mean as a metric."""
    e, augmented = cfg.eval, cfg.ablation.augment != ["none"]
    key = fid_name(e.features, e.num_samples)
    c = tracking.client()
    for p in paths.values():
        c.log_artifact(parent, str(p), artifact_path="ablation")
    for s in summarise(cells):
        tag = f"depth{s.depth}_{'residual' if s.residual else 'plain'}"
        tag += f"_{_slug(s.augment)}" if augmented else ""
        c.log_metric(parent, f"{key}_mean_{tag}", s.fid_mean)
        c.log_metric(parent, f"images_per_s_{tag}", s.ips_mean)
    c.log_metric(parent, "ablation_seconds", seconds)


def main() -> str:
    args = _args()
    if args.render:
        res = json.loads(Path(args.render).read_text())
        paths = write_report(args.out, [Cell(**c) for c in res["cells"]], res["settings"],
                             res.get("config"))
        return f"report re-written from {args.render}: {paths['md']}"
    cfg = _config(args)
    a, e = cfg.ablation, cfg.eval
    comparable = _comparable_settings(cfg, read_json(f"{args.prepared}/metrics.json"))
    earlier = _earlier_cells(args.merge, comparable) if args.merge else []
    from resgan.machine import describe
    from resgan.runtime.cluster import init_ray  # after validation: imports Ray
    from resgan.training.ray_train import resolve_use_gpu

    init_ray()
    use_gpu = resolve_use_gpu(cfg.train.use_gpu)
    n_cells = len(a.depths) * len(a.residual) * len(a.seeds) * len(a.augment)
    augmented = a.augment != ["none"]  # the augment axis shows only when it is one
    parent = tracking.start_run(cfg.tracking.experiment, "ablation", params={
        "ablation": a.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json"),
        "model": cfg.model.model_dump(mode="json"), "data": cfg.data.model_dump(mode="json"),
        "eval": e.model_dump(mode="json")}, tags={"resgan.stage": "ablation"})
    say(f"ablation: {n_cells} networks (depths {a.depths} x residual {a.residual} x seeds "
        f"{a.seeds}" + (f" x augment {a.augment}" if augmented else "") +
        f"), {a.epochs} epochs each, MLflow run {parent}")
    t0 = time.perf_counter()
    try:
        runs = _train_cells(cfg, args, parent, use_gpu)
        train_seconds = time.perf_counter() - t0
        cells = _score_cells(cfg, args, parent, runs)
    except BaseException:
        tracking.end_run(parent, "FAILED")
        raise
    seconds = time.perf_counter() - t0
    settings = {
        "machine": describe(),
        **comparable,
        **({"augment": f"train.augment per cell: {', '.join(a.augment)} (see resgan.augment)"}
           if augmented else {}),
        "workers per cell": a.workers_per_trial,
        "cells at once": a.max_concurrent,
        "wall time": f"{seconds / 60:.1f} min ({train_seconds / 60:.1f} min training)",
        "command": _command(),
    }
    if args.merge:
        trained = {(x.depth, x.residual, x.augment, x.seed) for x in cells}
        kept = [x for x in earlier if (x.depth, x.residual, x.augment, x.seed) not in trained]
        settings["cells"] = (f"{len(cells)} trained by this run, {len(kept)} kept from {args.merge} "
                             f"(the same settings above; its machine and wall time may differ)")
        cells = kept + cells
    paths = write_report(args.out, cells, settings, cfg.model_dump(mode="json"))
    _log_summary(cfg, parent, cells, paths, seconds)
    tracking.end_run(parent)
    table = paths["md"].read_text().split("## FID per cell")[1].split("\n## ")[0]  # that section
    return f"{n_cells} networks in {seconds / 60:.1f} min; report {paths['md']}\n{table.strip()}"


if __name__ == "__main__":
    run(main)
