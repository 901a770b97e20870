"""tune: Ray Tune search over the keys params.yaml sets to "tune", with ASHA on FID.

Searchable keys: model.depth, model.residual, train.loss, train.lr_g, train.lr_d (their
choices and ranges are in `tune`). Every trial trains the final configuration and stops at
tune.epochs at the latest; the train stage continues the best finished trial's checkpoint.
With no key set to "tune" there is nothing to search: best.json says so and train uses
params.yaml's values.

Reads params: data.*, model.*, train.*, tune.*, eval.inception_weights, eval.inception_dims, tracking.*, ray.*.
Writes the chosen point and its checkpoint (best.json, read by train) and every trial
(trials.csv, a plot).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from resgan.stage import monitor_ref, read_params, require_batch_fits, run
from resgan import tracking
from resgan.config import SEARCHABLE
from resgan.console import say
from resgan.metrics.scoring import fid_name
from resgan.runtime.runs import open_run
from resgan.training.job import TuneChoice

COLUMNS = ["trial_id", "depth", "residual", "loss", "lr_g", "lr_d", "fid", "best_fid", "epochs",
           "images_per_s", "status"]


def main() -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--out", default="outputs/tune", help="output folder")
    args = ap.parse_args()
    cfg = read_params()
    out = Path(args.out)
    searched = cfg.searched()
    require_batch_fits(cfg, args.prepared)
    if not searched:
        write_trials(out / "trials.csv", [])
        TuneChoice(searched=[]).write(out / "best.json")
        return "no key in params.yaml is 'tune': nothing to search; train uses params.yaml's values"
    from resgan.training.ray_train import resolve_use_gpu
    from resgan.runtime.cluster import init_ray, storage_path  # imports Ray
    from resgan.runtime.runs import run_key
    from resgan.tuning import best_trial, run_search

    init_ray()
    use_gpu = resolve_use_gpu(cfg.train.use_gpu)
    fid_ref = monitor_ref(args.prepared, cfg.eval)
    data = f"{args.prepared}/train.npz"
    say(f"tune: searching {', '.join(searched)} with {cfg.tune.num_samples} trials of up to "
        f"{cfg.tune.epochs} epochs (ASHA)")
    # One Tune experiment name per configuration: a killed stage, started again, restores
    # the experiment; finished trials are not run again.
    record, parent, resumed = open_run(
        storage_path(cfg.ray.storage_path), "tune",
        run_key(cfg, data, fid_ref, cfg.tune.model_dump(mode="json")),
        lambda name: tracking.start_run(cfg.tracking.experiment, "tune", params={
            "tune": cfg.tune.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json"),
            "model": cfg.model.model_dump(mode="json"), "data": cfg.data.model_dump(mode="json")},
            tags={"resgan.stage": "tune", "resgan.ray_run": name}))
    try:
        rows = run_search(cfg, data_path=data, fid_ref=fid_ref, use_gpu=use_gpu,
                          parent_run_id=parent, name=record.name, restore=resumed)
        best = best_trial(rows)
    except BaseException:
        tracking.end_run(parent, "FAILED")
        raise
    c = tracking.client()
    c.log_metric(parent, "best_" + fid_name(fid_ref.features, cfg.train.fid_samples), best.fid)
    for key, value in best.point.items():
        c.set_tag(parent, f"best.{key}", str(value))
    tracking.end_run(parent)

    fixed = {k: getattr(getattr(cfg, section), k) for k, section in SEARCHABLE.items()}
    write_trials(out / "trials.csv", [{**fixed, **r.flat()} for r in sorted(rows, key=lambda r: r.fid)])
    TuneChoice(
        searched=searched, point=best.point, checkpoint=TuneChoice.portable(best.checkpoint),
        trial_epochs=best.epochs, fid=best.fid, features=fid_ref.features,
        fid_samples=cfg.train.fid_samples, trial_id=best.trial_id, trial_run_id=best.run_id,
        mlflow_run_id=parent, trials=len(rows), failed=sum(r.status == "failed" for r in rows),
        stopped=sum(r.status == "stopped" for r in rows)).write(out / "best.json")
    # complete only now that its outputs exist: a stage killed before this restores the search
    record.release(mlflow_run_id=parent, complete=True)
    chosen = " ".join(f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in best.point.items())
    return (f"{len(rows)} trials ({sum(r.status == 'stopped' for r in rows)} stopped by ASHA); "
            f"best {chosen} fid={best.fid:.3f} after {best.epochs} epochs")


def write_trials(path: Path, rows: list[dict]) -> None:
    """trials.csv: one row per trial (the searched keys' columns; empty when not searched)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    run(main)
