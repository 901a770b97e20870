"""train: Ray Train TorchTrainer (DDP over G and D) with the depth and learning rates from tune.

Reads params: data.*, model.*, train.*, eval.inception_weights, eval.inception_dims, tracking.*, ray.*, and tune's best.json.
Writes the final generator (G_ema) as a DVC out, the per-epoch history (a plot) and the
MLflow run id for evaluate and register.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from _common import monitor_ref, open_run, read_json, read_params, run, write_json
from resgan import tracking
from resgan.config import replace
from resgan.training.loop import fid_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--best", default="outputs/tune/best.json", help="tune's chosen point")
    ap.add_argument("--out", default="outputs/train", help="output folder")
    args = ap.parse_args()
    cfg = read_params()
    best = read_json(args.best)
    cfg = replace(cfg, model={"depth": best["depth"]},
                  train={"lr_g": best["lr_g"], "lr_d": best["lr_d"]})
    from resgan.training import checkpoint as ckpt_io  # after validation: imports Ray Train
    from resgan.training.ray_train import (fit_tracked, init_ray, make_trainer, resolve_use_gpu,
                                           storage_path)
    from resgan.training.resume import run_key

    init_ray()
    use_gpu = resolve_use_gpu(cfg.train.use_gpu)
    data = f"{args.prepared}/train.npz"
    fid_ref = monitor_ref(args.prepared, cfg.eval)
    # One Ray run name per configuration: a killed stage, started again, resumes that run
    # from its newest checkpoint.
    record, run_id, _ = open_run(
        storage_path(cfg.ray.storage_path), "train", run_key(cfg, data, fid_ref),
        lambda name: tracking.start_run(
            cfg.tracking.experiment, "train", params=cfg.model_dump(mode="json"),
            tags={"resgan.stage": "train", "resgan.ray_run": name,
                  "resgan.tune_run_id": best.get("mlflow_run_id", "")}))
    tracking.log_dataset(run_id, data, f"{cfg.data.dataset}-r{cfg.data.resolution}-train")
    print(f"train: depth={cfg.model.depth} lr_g={cfg.train.lr_g:.2e} lr_d={cfg.train.lr_d:.2e} "
          f"workers={cfg.train.num_workers} gpu={use_gpu} ray run {record.name} "
          f"mlflow run {run_id}", flush=True)
    trainer = make_trainer(
        cfg, data_path=data, fid_ref=fid_ref, name=record.name, storage=cfg.ray.storage_path,
        num_workers=cfg.train.num_workers, use_gpu=use_gpu, run_id=run_id,
        tracking_uri=tracking.tracking_uri(), max_failures=cfg.train.max_failures)
    state, seconds = fit_tracked(trainer, run_id)
    record.write(mlflow_run_id=run_id, complete=True)
    out = Path(args.out)
    ckpt_io.export_generator(state, out / "generator.pt")
    # The per-epoch record is the MLflow run (Ray keeps metrics only with checkpoints).
    fid_key = fid_name(fid_ref.features, cfg.train.fid_samples)
    hist = tracking.metric_history(run_id, ["loss_d", "loss_g", fid_key, "images_per_s"])
    for h in hist:
        h["fid"] = h.pop(fid_key, float("nan"))
    with open(out / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "loss_d", "loss_g", "fid", "images_per_s"])
        w.writeheader()
        w.writerows(hist)
    (out / "run_id.txt").write_text(run_id + "\n")
    # Epoch 1 includes warm-up (thread pools, allocator): leave it out of the speed figure.
    speeds = [h["images_per_s"] for h in hist[1:] or hist]
    ips = sum(speeds) / len(speeds)
    summary = {"epochs": int(state["epoch"]), "images_per_s": round(ips, 1),
               "train_seconds": round(seconds, 1), "num_workers": cfg.train.num_workers,
               "final_fid_monitor": hist[-1]["fid"], "depth": cfg.model.depth,
               "residual": cfg.model.residual, "lr_g": cfg.train.lr_g, "lr_d": cfg.train.lr_d,
               "mlflow_run_id": run_id}  # from `dvc exp show` to the MLflow run
    write_json(out / "metrics.json", summary)
    c = tracking.client()
    c.log_metric(run_id, "train_seconds", seconds)
    c.log_artifact(run_id, str(out / "history.csv"))
    tracking.end_run(run_id)
    print(f"train: {summary['epochs']} epochs in {seconds:.0f}s, {ips:.0f} images/s, "
          f"monitor FID {summary['final_fid_monitor']:.3f}")


if __name__ == "__main__":
    run(main)
