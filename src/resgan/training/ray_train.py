"""Ray Train set-up: the per-worker function and the TorchTrainer driver.

The same ``train_loop_per_worker`` serves the train stage and every Tune trial.

Several pipelines on one machine: every process of a pipeline's Ray job (the driver, the
Ray Train controller and its placement-group cleaner, Tune trials, workers) has that job's
own Ray address in ``RAY_ADDRESS`` (see ``init_ray``), so nothing auto-detects "the" local
Ray instance, which fails as soon as two are running.

Bounded waits (seconds, environment variables read when the wait starts):

``RESGAN_WORKER_WAIT_S`` (default 600)
    how long a Ray Train run (the train stage, each Tune trial) waits for the CPUs/GPUs of
    its workers; then it fails with ``ResourceWaitError``.
``RESGAN_TRIAL_WAIT_S`` (default 600)
    how long a Tune trial may wait to start (its own 0.01 CPU); see resgan.tuning.
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

from resgan.errors import ResganError
from resgan.runtime import ray_private
from resgan.config import Config, ConfigError, TrainConfig, check_batch_split, load_config
from resgan.training import checkpoint as ckpt_io
from resgan.metrics.scoring import FidRef
from resgan.training.loop import fit


WORKER_WAIT_ENV = "RESGAN_WORKER_WAIT_S"
TRIAL_WAIT_ENV = "RESGAN_TRIAL_WAIT_S"
WORKER_NICENESS_ENV = "RAY_worker_niceness"  # Ray's own setting, read by the raylet
DEFAULT_WAIT_S = 600.0


class ResourceWaitError(ResganError, RuntimeError):
    """A bounded wait for Ray resources ran out. The message is one line: what waited, for
    what, how long, and what the cluster has."""


def wait_bound(var: str) -> float:
    """The bound in seconds set by the environment variable ``var`` (see the module doc)."""
    raw = os.environ.get(var, "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_WAIT_S
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{var}={raw!r}: need a number of seconds > 0")
    return seconds


def cluster_free() -> str:
    """What the cluster has, for a wait error: e.g. "0.02 of 2 CPUs free"."""
    total, free = ray.cluster_resources(), ray.available_resources()
    parts = [f"{free.get(k, 0.0):.3g} of {total[k]:.3g} {k}s free"
             for k in ("CPU", "GPU") if total.get(k)]
    return ", ".join(parts) or "no CPUs"


# The address of the Ray instance this process started (init_ray puts it in RAY_ADDRESS).
_started_address: str | None = None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class ClusterJoinError(ResganError, RuntimeError):
    """The Ray cluster at RAY_ADDRESS could not be joined (refused token, wrong address)."""


def _token_source() -> str | None:
    """Where a Ray auth token is at hand: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH") and Path(os.environ["RAY_AUTH_TOKEN_PATH"]).is_file():
        return f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    if (Path.home() / ".ray" / "auth_token").is_file():
        return "~/.ray/auth_token"
    return None


_TOKEN_HOW = ("give the head's token (`ray get-auth-token` on the head) in RAY_AUTH_TOKEN, in a "
              "file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token")


def _token_auth_for_join(address: str) -> str | None:
    """Turn Ray's token authentication on for a driver that joins ``address`` when the
    cluster asks for it; returns where the token comes from (None: not needed, or
    RAY_AUTH_MODE set by the user).

    Ray 2.60 leaves a joining driver in auth mode "disabled" unless RAY_AUTH_MODE=token is
    set, even with the cluster's token in ~/.ray/auth_token: a head started by `ray start`
    with token auth then refuses it after a minute of retries. Token mode must match the
    cluster's, though: a driver in token mode on a cluster without it cannot be called back
    by the cluster's workers. So the GCS is asked first, without a token (about a second),
    and again with the token, so that a wrong one is named at once."""
    if os.environ.get("RAY_AUTH_MODE"):
        return None
    from ray.exceptions import AuthenticationError

    try:
        ray_private.gcs_accepts(address)
        return None  # the cluster takes drivers without a token
    except AuthenticationError:
        pass
    except Exception:  # unreachable, ...: ray.init below says so
        return None
    source = _token_source()
    if source is None:
        raise ClusterJoinError(f"the Ray cluster at {address} (RAY_ADDRESS) uses token "
                               f"authentication and this driver has no token: {_TOKEN_HOW}")
    os.environ["RAY_AUTH_MODE"] = "token"
    ray_private.refresh_auth_config()
    try:
        ray_private.gcs_accepts(address)
    except AuthenticationError:
        raise ClusterJoinError(f"the Ray cluster at {address} (RAY_ADDRESS) refused the token "
                               f"from {source}: {_TOKEN_HOW}") from None
    except Exception:
        pass
    return source


def init_ray() -> None:
    """Join the cluster at RAY_ADDRESS if set, else start a local Ray; either way every
    process of this Ray job gets the job's own address in RAY_ADDRESS.

    Why: Ray's state API, used by Ray Train's placement-group cleaner (an actor), finds the
    cluster by auto-detection when RAY_ADDRESS is unset; with two local Ray instances on
    one machine (two pipelines) it fails ("multiple active Ray instances"), the placement
    groups of trials that ASHA stopped are never removed, and later trials wait for CPUs.
    """
    global _started_address
    if ray.is_initialized():
        return
    for var in (WORKER_WAIT_ENV, TRIAL_WAIT_ENV):  # a bad value fails before any work
        wait_bound(var)
    opts = dict(log_to_driver=True, configure_logging=True, logging_level="WARNING")
    # Ray Train 2.60 sends a worker's print() both to its stdout and to its own logger,
    # which Ray also forwards: every line came twice. Ray Train passes this variable on to
    # its controller and workers.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    given = os.environ.get("RAY_ADDRESS", "")
    if given and given != _started_address:
        # Join. A cluster started elsewhere does not have our environment: the job's
        # runtime_env gives RAY_ADDRESS to all its processes (Ray merges env_vars into
        # every actor's and task's own runtime_env). "auto" and localhost are resolved
        # here, the way ray.init resolves them, so every node gets a reachable address.
        address = given
        if "://" not in given:
            address = ray_private.bootstrap_address(given)
        os.environ["RAY_ADDRESS"] = address
        _token_auth_for_join(address)
        try:
            ray.init(address=address, runtime_env={"env_vars": {
                "RAY_ADDRESS": address,
                "RAY_TRAIN_ENABLE_PRINT_PATCH": os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"]}}, **opts)
        except (ConnectionError, RuntimeError) as exc:
            raise ClusterJoinError(
                f"could not join the Ray cluster at {address} (RAY_ADDRESS): check the address "
                f"and, with token authentication, the token ({_TOKEN_HOW}) "
                f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:160]})") from None
        return
    # Start a local Ray on a port chosen here, so its address is known before it starts:
    # the raylet, and every worker it spawns, inherit this process's environment.
    # (RAY_GCS_SERVER_PORT is Ray's own setting of a new head's GCS port; address="local"
    # makes ray.init start a new instance whatever RAY_ADDRESS says.)
    port = _free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    os.environ["RAY_ADDRESS"] = address
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    # Ray starts its workers at niceness 15 (RayConfig worker_niceness), below every other
    # process of the machine, Ray's own daemons and the stage's driver included: on a
    # 2-core machine each of their wake-ups takes a core from the training worker first
    # (bench/throughput.py runs both; the difference was within its noise here). Workers
    # of the local Ray run at the niceness of the stage that started them; a cluster's own
    # `ray start` decides for its nodes.
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")
    try:
        ray.init(address="local", **opts)
    except BaseException:
        os.environ.pop("RAY_ADDRESS", None)  # no Ray there: a later call starts one again
        raise
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)
    _started_address = address


def storage_path(path: str) -> str:
    """Ray needs an absolute local path or a URI (s3://, gs://, ...)."""
    return path if "://" in path else str(Path(path).resolve())


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
        from resgan.training.cpu_share import machine_cores

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
    """Ray Train worker (or, in local mode, the caller's process): rebuild the config, resume
    from the run's newest checkpoint if any (else from ``config["start"]``, a checkpoint to
    continue, e.g. tune's best trial), train with ``config["threads"]`` torch threads."""
    import torch

    cfg = load_config(config["cfg"], "worker config")
    _quiet_ray_reports()
    caller_threads = torch.get_num_threads()  # local mode: this is the caller's process
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    try:
        _train(config, cfg)
    finally:
        torch.set_num_threads(caller_threads)


def _train(config: dict[str, Any], cfg: Config) -> None:
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    start = None
    local = config.get("local_dir")  # local mode: the run's checkpoints are kept here
    ck = ray.train.get_checkpoint()
    if local and (kept := ckpt_io.newest(local)):
        ck = Checkpoint(kept)
    if ck is None and config.get("start"):
        ck = Checkpoint(config["start"])
    if ck is not None:
        with ck.as_directory() as d:
            start = ckpt_io.load(d, device="cpu")
    logger = None
    if rank == 0 and config.get("run_id"):
        from resgan.tracking import MlflowRunLogger

        logger = MlflowRunLogger(config["tracking_uri"], config["run_id"])

    report = reporting_to(ray.train.report, keep_in=local)
    fid_ref = FidRef(**config["fid_ref"]) if config.get("fid_ref") else None
    fit(cfg, data_path=config["data_path"], report=report, rank=rank, world_size=world,
        device=device, fid_ref=fid_ref, start=start, logger=logger,
        stop_epoch=config.get("stop_epoch"))


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
                 start: str | None = None, stop_epoch: int | None = None) -> TorchTrainer:
    """A TorchTrainer running ``train_loop_per_worker`` with ``num_workers`` DDP ranks,
    each with ``cpus_per_worker`` CPUs and as many torch threads; with ``num_workers`` 0, in
    Ray Train's local mode (see ``place``), keeping its checkpoints where Ray Train would
    (``<storage>/<name>/checkpoint_<epoch>``) and resuming from the newest of them. Local
    mode restarts nothing (``max_failures`` applies to workers); started again, the stage
    resumes.

    Args:
        start: a checkpoint (directory or URI) to continue when the run has none of its own.
        stop_epoch: see ``resgan.training.loop.fit``.
    """
    check_batch_split(cfg.train.batch_size, num_workers, "the Ray Train workers")  # e.g. auto's count
    config = {
        "cfg": cfg.model_dump(mode="json"),
        "data_path": str(Path(data_path).resolve()),
        "fid_ref": None if fid_ref is None else vars(fid_ref.resolved()),
        "run_id": run_id,
        "tracking_uri": tracking_uri,
        "threads": max(1, int(cpus_per_worker)),
        "start": start,
        "stop_epoch": stop_epoch,
        "local_dir": None if num_workers else f"{storage_path(storage).rstrip('/')}/{name}",
    }
    if not num_workers:  # before ScalingConfig(num_workers=0) announces local mode
        _quiet_ray_reports()
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
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
