"""Ray Tune over model.depth, train.lr_g and train.lr_d with ASHA early stopping on FID.

Each trial is a Tune function that runs a Ray Train ``TorchTrainer`` with the very same
per-worker loop as the train stage (``tune.workers_per_trial`` DDP ranks). The search has
one parent MLflow run; every trial logs into a run nested under it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from resgan import tracking
from resgan.config import Config, load_config, replace
from resgan.training.loop import FidRef
from resgan.training.ray_train import make_trainer, storage_path

METRIC, MODE = "fid", "min"


def search_space(cfg: Config) -> dict[str, Any]:
    t = cfg.tune
    return {
        "depth": tune.choice(list(t.depth_choices)),
        "lr_g": tune.loguniform(*t.lr_g_range),
        "lr_d": tune.loguniform(*t.lr_d_range),
    }


def trial_config(cfg: Config, point: dict[str, Any]) -> Config:
    """The train config a trial runs: the search point applied, tune.epochs long."""
    return replace(cfg, model={"depth": int(point["depth"])},
                   train={"lr_g": float(point["lr_g"]), "lr_d": float(point["lr_d"]),
                          "epochs": cfg.tune.epochs,
                          "checkpoint_every": cfg.tune.epochs, "sample_every": cfg.tune.epochs})


TRIAL_CPU = 0.01  # the trial process only waits for its TorchTrainer (0 is rejected)


def _trial(config: dict[str, Any], *, base: dict[str, Any], job: dict[str, Any]) -> None:
    """One Tune trial: a nested MLflow run and a TorchTrainer of the shared loop.

    Args:
        config: the search point (depth, lr_g, lr_d).
        base: the validated configuration the point is applied to.
        job: paths, parent run and resources, the same for every trial.
    """
    base_cfg = load_config(base, "trial config")
    point = {k: config[k] for k in ("depth", "lr_g", "lr_d")}
    cfg = trial_config(base_cfg, point)
    os.environ["MLFLOW_TRACKING_URI"] = job["tracking_uri"]  # the trial runs in another cwd
    trial_id = tune.get_context().get_trial_id()
    run_id = None
    if job["parent_run_id"]:
        run_id = tracking.start_run(
            cfg.tracking.experiment, f"trial-{trial_id}", params=point,
            parent_run_id=job["parent_run_id"], tags={"resgan.trial_id": trial_id})
    trainer = make_trainer(
        cfg, data_path=job["data_path"], fid_ref=FidRef(**job["fid_ref"]),
        name=f"{job['name']}-{trial_id}", storage=job["storage"],
        num_workers=cfg.tune.workers_per_trial, use_gpu=job["use_gpu"],
        cpus_per_worker=1.0 - TRIAL_CPU / cfg.tune.workers_per_trial,
        run_id=run_id, tracking_uri=job["tracking_uri"], callbacks=[TuneReportCallback()])
    trainer.fit()  # the driver sets the run's final status: Tune may stop us mid-fit


@dataclass
class TrialRow:
    trial_id: str
    depth: int
    lr_g: float
    lr_d: float
    fid: float  # last FID the trial reported (NaN if none)
    best_fid: float
    epochs: int  # epochs the trial ran before it finished or was stopped
    status: str  # finished, stopped (by ASHA), failed


def run_search(cfg: Config, *, data_path: str, fid_ref: FidRef, use_gpu: bool,
               parent_run_id: str | None, name: str | None = None) -> list[TrialRow]:
    """Run the search; return one row per trial (failed trials included)."""
    t = cfg.tune
    name = name or f"tune-{time.strftime('%Y%m%d-%H%M%S')}"
    # Trials run in their own working directories: hand them absolute paths.
    job = {"data_path": str(Path(data_path).resolve()), "fid_ref": vars(fid_ref.resolved()),
           "use_gpu": use_gpu, "storage": storage_path(cfg.ray.storage_path), "name": name,
           "parent_run_id": parent_run_id, "tracking_uri": tracking.tracking_uri()}
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=cfg.model_dump(mode="json"), job=job),
        {"cpu": TRIAL_CPU})
    # Each trial's Train workers sit outside Tune's own accounting: start no more trials
    # than the cluster can give workers to, or the extra ones wait on a worker group.
    cpus = ray.cluster_resources().get("CPU", 1.0)
    concurrent = max(1, min(t.max_concurrent, int(cpus // t.workers_per_trial)))
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=t.epochs,
                              grace_period=t.grace_period, reduction_factor=t.reduction_factor)
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(cfg),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, scheduler=scheduler, num_samples=t.num_samples,
            search_alg=BasicVariantGenerator(max_concurrent=concurrent, random_state=t.seed)),
        run_config=tune.RunConfig(name=name, storage_path=storage_path(cfg.ray.storage_path),
                                  verbose=1),
    )
    grid = tuner.fit()
    rows = []
    for res in grid:
        c = res.config
        hist = res.metrics_dataframe
        fids = [] if hist is None or METRIC not in hist else [float(v) for v in hist[METRIC]]
        epochs = int(res.metrics.get("training_iteration", 0)) if res.metrics else 0
        if res.error is not None:
            status = "failed"
        elif epochs < t.epochs:
            status = "stopped"
        else:
            status = "finished"
        rows.append(TrialRow(
            trial_id=_trial_id(res), depth=int(c["depth"]),
            lr_g=float(c["lr_g"]), lr_d=float(c["lr_d"]),
            fid=fids[-1] if fids else math.nan, best_fid=min(fids) if fids else math.nan,
            epochs=epochs, status=status))
    _close_trial_runs(cfg.tracking.experiment, parent_run_id, rows)
    return rows


def _trial_id(res) -> str:
    if res.metrics and "trial_id" in res.metrics:  # Tune adds it to every report
        return str(res.metrics["trial_id"])
    return res.path.rstrip("/").split("/")[-1]


_RUN_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}


def _close_trial_runs(experiment: str, parent_run_id: str | None, rows: list["TrialRow"]) -> None:
    """Give every nested trial run its final status (ASHA ends a stopped trial's process,
    so the trial itself cannot)."""
    if not parent_run_id:
        return
    c = tracking.client()
    status = {r.trial_id: r.status for r in rows}
    for run in c.search_runs([tracking.experiment_id(experiment)],
                             filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"):
        st = status.get(run.data.tags.get("resgan.trial_id", ""), "failed")
        c.set_tag(run.info.run_id, "resgan.trial_status", st)
        c.set_terminated(run.info.run_id, _RUN_STATUS[st])


def best_trial(rows: list[TrialRow]) -> TrialRow:
    """The trial with the lowest final FID among those that did not fail."""
    ok = [r for r in rows if r.status != "failed" and math.isfinite(r.fid)]
    if not ok:
        raise RuntimeError("every trial failed: see the Ray Tune output above")
    return min(ok, key=lambda r: r.fid)
