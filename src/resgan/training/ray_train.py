"""Ray Train set-up: the per-worker function and the TorchTrainer driver.

The same ``train_loop_per_worker`` serves the train stage and every Tune trial.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from resgan.config import Config, load_config
from resgan.training import checkpoint as ckpt_io
from resgan.training.loop import FidRef, fit


def init_ray() -> None:
    """Join the cluster at RAY_ADDRESS if set, else start (or reuse) a local Ray."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True,
                 configure_logging=True, logging_level="WARNING")


def storage_path(path: str) -> str:
    """Ray needs an absolute local path or a URI (s3://, gs://, ...)."""
    return path if "://" in path else str(Path(path).resolve())


def resolve_use_gpu(setting: str | bool) -> bool:
    if setting == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def _quiet_ray_reports() -> None:
    """Ray Train 2.60 logs every report at INFO from each worker (a logger named after its
    source file); the loop prints one line per epoch on rank 0 instead."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: leave its logging alone
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: rebuild the config, resume from Ray's checkpoint if any, train."""
    cfg = load_config(config["cfg"], "worker config")
    _quiet_ray_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    start = None
    if (ck := ray.train.get_checkpoint()) is not None:
        with ck.as_directory() as d:
            start = ckpt_io.load(d, device="cpu")
    logger = None
    if rank == 0 and config.get("run_id"):
        from resgan.tracking import MlflowRunLogger

        logger = MlflowRunLogger(config["tracking_uri"], config["run_id"])

    def report(metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            ckpt_io.save(Path(d) / ckpt_io.CKPT_FILE, state)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))

    fid_ref = FidRef(**config["fid_ref"]) if config.get("fid_ref") else None
    fit(cfg, data_path=config["data_path"], report=report, rank=rank, world_size=world,
        device=device, fid_ref=fid_ref, start=start, logger=logger)


def fit_tracked(trainer: TorchTrainer, run_id: str) -> tuple[dict[str, Any], float]:
    """Run ``trainer``; on any failure mark the MLflow run FAILED and re-raise.

    Returns:
        (the final checkpoint's state, seconds the fit took).
    """
    from resgan import tracking

    t0 = time.perf_counter()
    try:
        result = trainer.fit()
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    seconds = time.perf_counter() - t0
    with result.checkpoint.as_directory() as d:
        return ckpt_io.load(d), seconds


def make_trainer(cfg: Config, *, data_path: str, fid_ref: FidRef | None, name: str,
                 storage: str, num_workers: int, use_gpu: bool, run_id: str | None = None,
                 tracking_uri: str | None = None, callbacks: list | None = None,
                 max_failures: int = 0, cpus_per_worker: float = 1.0) -> TorchTrainer:
    """A TorchTrainer running ``train_loop_per_worker`` with ``num_workers`` DDP ranks."""
    config = {
        "cfg": cfg.model_dump(mode="json"),
        "data_path": str(Path(data_path).resolve()),
        "fid_ref": None if fid_ref is None else vars(fid_ref.resolved()),
        "run_id": run_id,
        "tracking_uri": tracking_uri,
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=storage_path(storage),
                             callbacks=callbacks or [],
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
