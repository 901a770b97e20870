"""train: Ray Train TorchTrainer (DDP over G and D), continuing tune's best trial.

With `train.num_workers: auto` on one machine without GPUs it trains in this process (Ray
Train's local mode, every core, no Ray started: see resgan.training.ray_train.place).

The searched keys (those params.yaml sets to "tune") take tune's chosen values; the others
are params.yaml's. When tune searched, its best trial already trained this configuration
for tune.epochs: training continues that trial's checkpoint to train.epochs (its history is
copied into the train run), so the search's training is not thrown away.

Reads params: data.*, model.*, train.*, eval.inception_weights, eval.inception_dims, tracking.*, ray.*, and tune's best.json.
Writes the final generator (G_ema) as a DVC out, the per-epoch history (a plot) and the
MLflow run id for evaluate and register.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from resgan.stage import monitor_ref, read_params, require_batch_fits, run, write_json
from resgan import tracking
from resgan.console import follow_epochs, say
from resgan.metrics.scoring import fid_name
from resgan.runtime.runs import open_run
from resgan.training.job import TuneChoice

HISTORY = ["loss_d", "loss_g", "fid", "images_per_s"]


def main() -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prepared", default="outputs/prepare", help="prepare's output folder")
    ap.add_argument("--best", default="outputs/tune/best.json", help="tune's chosen point")
    ap.add_argument("--out", default="outputs/train", help="output folder")
    args = ap.parse_args()
    cfg = read_params()
    best = TuneChoice.read(args.best)
    cfg = cfg.with_tuned(best.point, args.best).require_fixed("train")
    require_batch_fits(cfg, args.prepared)
    from resgan.training import checkpoint as ckpt_io  # after validation: imports Ray Train
    from resgan.training.ray_train import fit_tracked, make_trainer, place
    from resgan.runtime.cluster import storage_path
    from resgan.runtime.runs import run_key

    trial_checkpoint = best.start()
    if best.checkpoint and not trial_checkpoint:
        say(f"train: tune's checkpoint {best.checkpoint} is gone (ray.storage_path cleaned?): "
            f"training the chosen point from the start")
    done = best.trial_epochs if trial_checkpoint else 0  # epochs this run begins with
    where = place(cfg.train)  # starts or joins Ray unless it trains in this process
    data = f"{args.prepared}/train.npz"
    fid_ref = monitor_ref(args.prepared, cfg.eval)
    # One Ray run name per configuration: a killed stage, started again, resumes that run
    # from its newest checkpoint.
    # (Local mode keeps its checkpoints itself: a run of the other kind is another run.)
    key = run_key(cfg, data, fid_ref, trial_checkpoint, *(() if where.workers else ("local mode",)))
    record, run_id, resumed = open_run(
        storage_path(cfg.ray.storage_path), "train", key,
        lambda name: tracking.start_run(
            cfg.tracking.experiment, "train", params=cfg.model_dump(mode="json"),
            tags={"resgan.stage": "train", "resgan.ray_run": name,
                  "resgan.tune_run_id": best.mlflow_run_id or "",
                  "resgan.continues_trial": (best.trial_id or "") if trial_checkpoint else ""}))
    fid_key = fid_name(fid_ref.features, cfg.train.fid_samples)
    if trial_checkpoint and not resumed:  # the trial's epochs are this run's first ones
        _copy_history(best.trial_run_id, run_id, fid_key)
    tracking.log_dataset(run_id, data, f"{cfg.data.dataset}-r{cfg.data.resolution}-train")
    point = " ".join(f"{k}={getattr(getattr(cfg, s), k)}" for k, s in
                     (("depth", "model"), ("residual", "model"), ("loss", "train")))
    begin = (f"continuing trial {best.trial_id} from epoch {done}"
             if trial_checkpoint else "from the start")
    say(f"train: {point} lr_g={cfg.train.lr_g:.2e} lr_d={cfg.train.lr_d:.2e}, {begin} to "
        f"epoch {cfg.train.epochs}; {where}")
    print(f"train: ray run {record.name}, mlflow run {run_id}", flush=True)
    if trial_checkpoint and done >= cfg.train.epochs:  # the trial trained it all
        import time

        t0 = time.perf_counter()
        state = ckpt_io.load(trial_checkpoint)
        seconds = time.perf_counter() - t0
    else:
        trainer = make_trainer(
            cfg, data_path=data, fid_ref=fid_ref, name=record.name, storage=cfg.ray.storage_path,
            num_workers=where.workers, cpus_per_worker=where.cpus, use_gpu=where.use_gpu,
            run_id=run_id, tracking_uri=tracking.tracking_uri(), max_failures=cfg.train.max_failures,
            from_checkpoint=trial_checkpoint)
        follow_epochs(cfg.train.epochs, done)
        state, seconds = fit_tracked(trainer, run_id)
    out = Path(args.out)
    ckpt_io.export_generator(state, out / "generator.pt")
    hist = _write_history(out / "history.csv", run_id, fid_key)
    (out / "run_id.txt").write_text(run_id + "\n")
    ips = _speed(hist, first=done + 1 if trial_checkpoint else 2)
    summary = {"epochs": int(state["epoch"]), "images_per_s": round(ips, 1),
               "train_seconds": round(seconds, 1), "num_workers": where.workers,
               "cpus_per_worker": where.cpus, "final_fid_monitor": hist[-1]["fid"],
               "depth": cfg.model.depth, "residual": cfg.model.residual, "loss": cfg.train.loss,
               "lr_g": cfg.train.lr_g, "lr_d": cfg.train.lr_d, "epochs_in_tune": done,
               "mlflow_run_id": run_id}  # from `dvc exp show` to the MLflow run
    write_json(out / "metrics.json", summary)
    # complete only now that its outputs exist: a stage killed before this resumes the run
    record.release(mlflow_run_id=run_id, complete=True)
    c = tracking.client()
    c.log_metric(run_id, "train_seconds", seconds)
    c.log_artifact(run_id, str(out / "history.csv"))
    tracking.end_run(run_id)
    return (f"{summary['epochs']} epochs ({summary['epochs_in_tune']} of them in tune) in "
            f"{seconds:.0f}s, {ips:.0f} images/s, monitor FID {summary['final_fid_monitor']:.3f}")


def _speed(hist: list[dict], first: int) -> float:
    """Mean images/s of the epochs from ``first``: epoch 1 includes warm-up (thread pools,
    the allocator), and a continued trial's epochs ran with the search's resources."""
    speeds = [h["images_per_s"] for h in hist if h["epoch"] >= first and "images_per_s" in h]
    return sum(speeds) / len(speeds) if speeds else float("nan")


def _write_history(path: Path, run_id: str, fid_key: str) -> list[dict]:
    """The run's per-epoch metrics (its MLflow record: Ray keeps metrics only with
    checkpoints) as history.csv, FID under the name ``fid``; returns the rows."""
    hist = tracking.metric_history(run_id, ["loss_d", "loss_g", fid_key, "images_per_s"])
    for h in hist:
        h["fid"] = h.pop(fid_key, float("nan"))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", *HISTORY])
        w.writeheader()
        w.writerows(hist)
    return hist


def _copy_history(trial_run: str | None, run_id: str, fid_key: str) -> None:
    """Log the trial's per-epoch metrics and sample grids into the train run: one history
    from epoch 1."""
    if not trial_run:
        return
    import tempfile
    import time

    from mlflow.entities import Metric

    c = tracking.client()
    now = int(time.time() * 1000)
    rows = tracking.metric_history(trial_run, ["loss_d", "loss_g", fid_key, "images_per_s"])
    metrics = [Metric(k, v, now, int(r["epoch"])) for r in rows for k, v in r.items() if k != "epoch"]
    for i in range(0, len(metrics), 1000):
        c.log_batch(run_id, metrics=metrics[i:i + 1000])
    if c.list_artifacts(trial_run, "samples"):
        with tempfile.TemporaryDirectory() as d:
            c.log_artifacts(run_id, c.download_artifacts(trial_run, "samples", d), "samples")


if __name__ == "__main__":
    run(main)
