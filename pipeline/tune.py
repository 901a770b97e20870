"""tune: Ray Tune search over model.depth, train.lr_g, train.lr_d with ASHA on FID.

Reads params: data.*, model.*, train.*, tune.*, eval.inception_weights, eval.inception_dims, tracking.*, ray.*.
Writes the chosen point (best.json, read by train) and every trial (trials.csv, a plot).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from _common import monitor_ref, open_run, read_params, run, write_json
from resgan import tracking
from resgan.training.loop import fid_name
from resgan.training.ray_train import init_ray, resolve_use_gpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--out", default="outputs/tune", help="output folder")
    args = ap.parse_args()
    cfg = read_params()
    from resgan.training.ray_train import storage_path  # after validation: imports Ray
    from resgan.training.resume import run_key
    from resgan.tuning import best_trial, run_search

    init_ray()
    use_gpu = resolve_use_gpu(cfg.train.use_gpu)
    fid_ref = monitor_ref(args.prepared, cfg.eval)
    data = f"{args.prepared}/train.npz"
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
    record.write(mlflow_run_id=parent, complete=True)
    c = tracking.client()
    c.log_metric(parent, "best_" + fid_name(fid_ref.features, cfg.train.fid_samples), best.fid)
    for key, value in best.point.items():
        c.set_tag(parent, f"best.{key}", str(value))
    tracking.end_run(parent)

    Path(args.out).mkdir(parents=True, exist_ok=True)
    with open(f"{args.out}/trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].flat()))
        w.writeheader()
        for r in sorted(rows, key=lambda r: (r.point["depth"], r.trial_id)):
            w.writerow(r.flat())
    write_json(f"{args.out}/best.json", {
        **best.point, "fid": best.fid,
        "trial_id": best.trial_id, "features": fid_ref.features, "fid_samples": cfg.train.fid_samples,
        "trials": len(rows), "failed": sum(r.status == "failed" for r in rows),
        "stopped": sum(r.status == "stopped" for r in rows), "mlflow_run_id": parent})
    p = best.point
    print(f"tune: {len(rows)} trials; best depth={p['depth']} lr_g={p['lr_g']:.2e} "
          f"lr_d={p['lr_d']:.2e} fid={best.fid:.3f}")


if __name__ == "__main__":
    run(main)
