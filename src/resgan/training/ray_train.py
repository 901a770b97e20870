"""Ray Train set-up: where a training runs, the per-worker function and the TorchTrainer driver.

The same ``train_loop_per_worker`` serves the train stage and every Tune trial. Joining or
starting Ray and the bounded waits for its resources are resgan.runtime.cluster's.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from resgan.runtime import ray_private
from resgan.runtime.cluster import (WORKER_WAIT_ENV, ResourceWaitError, cluster_free, init_ray,
                                    storage_path, wait_bound)
from resgan.config import Config, TrainConfig, check_batch_split
from resgan.training import checkpoint as ckpt_io
from resgan.metrics.scoring import FidRef
from resgan.training.job import TrainingJob, run_job


def resolve_use_gpu(setting: str | bool) -> bool:
    if setting == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def resolve_workers(setting: int | str, use_gpu: bool) -> tuple[int, float]:
    """train.num_workers as (workers, CPUs per worker).

    ``auto``: one worker per GPU of the cluster when training on GPUs; on CPUs one worker
    per node, each with all the CPUs of the smallest node, so that on one machine a single
    process trains with every core (DDP between processes on one CPU machine only adds
    all-reduces: see docs/benchmarks.md). A number: that many workers, one CPU each.
    """
    if setting != "auto":
        return int(setting), 1.0
    if use_gpu:
        return max(1, int(ray.cluster_resources().get("GPU", 1))), 1.0
    nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes()
             if n.get("Alive") and n["Resources"].get("CPU", 0.0) >= 1]
    if not nodes:
        return 1, 1.0
    return len(nodes), float(int(min(nodes)))


@dataclass(frozen=True)
class Placement:
    """Where a training runs: ``workers`` Ray Train workers (DDP ranks) of ``cpus`` CPUs
    each, or, with ``workers`` 0, Ray Train's local mode: the training function in this
    process with ``cpus`` torch threads, no Ray started."""

    workers: int
    cpus: float
    use_gpu: bool

    def __str__(self) -> str:
        if not self.workers:
            return f"Ray Train local mode: this process, {self.cpus:g} thread(s)"
        return f"{self.workers} Ray Train worker(s) x {self.cpus:g} CPU(s) gpu={self.use_gpu}"


def place(train: TrainConfig) -> Placement:
    """The placement of a training with the ``train`` section of a config.

    ``num_workers: auto`` on a machine of its own (no RAY_ADDRESS) without GPUs to use:
    Ray Train's local mode (``ScalingConfig(num_workers=0)``), every core of the machine in
    this process. A Ray Train worker beside Ray's own processes (GCS, raylet, dashboard,
    Train controller and a dozen helpers) is slower than the same loop alone on a small
    machine, and its start costs seconds: docs/benchmarks.md (a). Otherwise
    this starts or joins Ray (``init_ray``) and places ``resolve_workers``' workers.
    """
    if train.num_workers == "auto" and not os.environ.get("RAY_ADDRESS") and (
            train.use_gpu is False or (train.use_gpu == "auto" and not _local_gpus())):
        from resgan.runtime.cpu_share import machine_cores

        return Placement(0, float(machine_cores()), False)
    init_ray()
    use_gpu = resolve_use_gpu(train.use_gpu)
    workers, cpus = resolve_workers(train.num_workers, use_gpu)
    return Placement(workers, cpus, use_gpu)


def _local_gpus() -> bool:
    """GPUs of this machine, asked before any Ray starts (``resolve_use_gpu`` asks the Ray
    cluster once one runs; on one machine the two agree)."""
    import torch

    return torch.cuda.is_available()


def _quiet_ray_reports() -> None:
    """Ray Train 2.60 logs every report at INFO from each worker (a logger named after its
    source file; in local mode, after its module); the loop prints one line per epoch on
    rank 0 instead. Its config module announces local mode (INFO) when the trainer is
    made: the stage says so itself, in its own words (``Placement``)."""
    logging.getLogger("ray.train.v2.api.config").setLevel(logging.WARNING)
    ray_private.quiet_train_reports()


def reporting_to(ray_report: Callable[..., None], keep_in: str | None = None
                 ) -> Callable[[dict[str, float], dict | None], None]:
    """fit's ``report`` for ``ray.train.report`` or ``ray.tune.report`` (the same signature):
    metrics every epoch, with the checkpoint state saved into a Ray Checkpoint when one is
    due; with ``keep_in`` (local mode, which persists nothing) saved there first."""

    def report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        if state is None:
            ray_report(metrics)
            return
        if keep_in:
            ray_report(metrics, checkpoint=Checkpoint(ckpt_io.keep(keep_in, state)))
            return
        with tempfile.TemporaryDirectory() as d:
            ckpt_io.save(Path(d) / ckpt_io.CKPT_FILE, state)
            ray_report(metrics, checkpoint=Checkpoint.from_directory(d))

    return report


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker (or, in local mode, the caller's process): run ``config["job"]`` (a
    ``TrainingJob``), resuming from the run's newest checkpoint if it has one."""
    job = TrainingJob.from_dict(config["job"])
    _quiet_ray_reports()
    ctx = ray.train.get_context()
    restored = ray.train.get_checkpoint()
    if job.keep_dir and (kept := ckpt_io.newest(job.keep_dir)):  # local mode's own checkpoints
        restored = Checkpoint(kept)
    run_job(job, report=reporting_to(ray.train.report, keep_in=job.keep_dir), restored=restored,
            rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
            device=ray.train.torch.get_device())


def fit_tracked(trainer: TorchTrainer, run_id: str) -> tuple[dict[str, Any], float]:
    """Run ``trainer``; on any failure mark the MLflow run FAILED and re-raise.

    Returns:
        (the final checkpoint's state, seconds the fit took).
    """
    from resgan import tracking

    t0 = time.perf_counter()
    try:
        result = fit_bounded(trainer)
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    seconds = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d:
        return ckpt_io.load(d), seconds


def make_trainer(cfg: Config, *, data_path: str, fid_ref: FidRef | None, name: str,
                 storage: str, num_workers: int, use_gpu: bool, run_id: str | None = None,
                 tracking_uri: str | None = None, callbacks: list | None = None,
                 max_failures: int = 0, cpus_per_worker: float = 1.0,
                 from_checkpoint: str | None = None, stop_epoch: int | None = None) -> TorchTrainer:
    """A TorchTrainer running the ``TrainingJob`` of ``cfg`` with ``num_workers`` DDP ranks,
    each with ``cpus_per_worker`` CPUs and as many torch threads; with ``num_workers`` 0, in
    Ray Train's local mode (see ``place``), keeping its checkpoints where Ray Train would
    (``<storage>/<name>/checkpoint_<epoch>``) and resuming from the newest of them. Local
    mode restarts nothing (``max_failures`` applies to workers); started again, the stage
    resumes.

    Args:
        from_checkpoint, stop_epoch, run_id, tracking_uri: see ``TrainingJob``.
    """
    check_batch_split(cfg.train.batch_size, num_workers, "the Ray Train workers")  # e.g. auto's count
    job = TrainingJob.build(
        cfg, data_path=data_path, fid_ref=fid_ref, run_id=run_id, tracking_uri=tracking_uri,
        from_checkpoint=from_checkpoint, stop_epoch=stop_epoch,
        threads=max(1, int(cpus_per_worker)),
        keep_dir=None if num_workers else f"{storage_path(storage).rstrip('/')}/{name}")
    if not num_workers:  # before ScalingConfig(num_workers=0) announces local mode
        _quiet_ray_reports()
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job.to_dict()},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker})
        if num_workers else ScalingConfig(num_workers=0),
        run_config=RunConfig(name=name, storage_path=storage_path(storage),
                             callbacks=callbacks or [],
                             # A worker group that does not start within the bound
                             # fails the run (Ray's default, -1, retries it forever).
                             failure_config=FailureConfig(max_failures=max_failures,
                                                          controller_failure_limit=0)),
    )


def fit_bounded(trainer: TorchTrainer):
    """``trainer.fit()``, waiting at most RESGAN_WORKER_WAIT_S for the workers' resources.

    Raises:
        ResourceWaitError: the workers could not be placed in time (one line, with what
            the cluster has).
    """
    bound = wait_bound(WORKER_WAIT_ENV)
    # Ray Train's own bound on a worker group's placement; its controller (an actor) gets
    # the variable from this process's environment.
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = f"{bound:g}"
    try:
        return trainer.fit()
    except ray.train.ControllerError as exc:
        if not ray_private.is_worker_startup_timeout(exc.controller_failure):
            raise
        sc = trainer.scaling_config
        res = dict(sc.resources_per_worker or {"CPU": 1})
        if sc.use_gpu:
            res.setdefault("GPU", 1)
        each = ", ".join(f"{v:g} {k}" for k, v in res.items())
        raise ResourceWaitError(
            f"waited {bound:g} s for the {sc.num_workers} Ray Train worker(s) ({each} each) of "
            f"run {trainer.run_config.name}; the cluster has {cluster_free()} "
            f"(set {WORKER_WAIT_ENV} to wait longer)") from None
