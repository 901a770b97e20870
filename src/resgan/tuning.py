"""Ray Tune over the keys set to "tune" (model.depth, model.residual, train.loss,
train.lr_g, train.lr_d) with ASHA early stopping on FID.

A trial runs the final training itself, stopped at ``tune.epochs`` (ASHA's max_t): the same
configuration and learning-rate schedule as the train stage, which continues the best
finished trial's checkpoint to ``train.epochs`` rather than starting again. So the search
compares candidates at budgets up to the final one, and none of its training is thrown away.

A one-worker trial (``tune.workers_per_trial: 1``) runs the Ray-free loop in the Tune
function's own process (Tune's checkpoints and failure handling, no Ray Train worker group
to start); with more workers a trial runs a Ray Train ``TorchTrainer`` of the very same loop.
The search has one parent MLflow run; every trial logs into a run nested under it.
``run_trials`` also serves the depth x shortcut ablation (a grid, no early stopping; see
resgan.ablation).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.cloudpickle as cloudpickle
from ray import tune
from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from resgan import console, tracking
from resgan.config import Config, load_config, replace
from resgan.errors import ResganError
from resgan.training import checkpoint as ckpt_io
from resgan.metrics.scoring import FidRef
from resgan.training.job import TrainingJob, run_job
from resgan.training.loop import DivergedError
from resgan.runtime.cluster import (TRIAL_WAIT_ENV, ResourceWaitError, cluster_free,
                                    storage_path, wait_bound)
from resgan.training.ray_train import fit_bounded, make_trainer, reporting_to

METRIC, MODE = "fid", "min"


def search_space(cfg: Config) -> dict[str, Any]:
    """Tune's space over the keys params.yaml sets to "tune" (empty when none is)."""
    t = cfg.tune
    space = {"depth": tune.choice(list(t.depth_choices)),
             "residual": tune.choice(list(t.residual_choices)),
             "loss": tune.choice(list(t.loss_choices)),
             "lr_g": tune.loguniform(*t.lr_g_range),
             "lr_d": tune.loguniform(*t.lr_d_range)}
    return {k: space[k] for k in cfg.searched()}


# What a trial's point may set: key -> type (sections: resgan.config.SEARCHABLE; seed: train).
POINT_KEYS = {"depth": int, "residual": bool, "loss": str, "lr_g": float, "lr_d": float,
              "seed": int}


def grid(**values: list) -> dict[str, Any]:
    """A Tune space of every combination of ``values`` (keys of POINT_KEYS), e.g. the
    ablation's depth x residual x seed."""
    return {k: tune.grid_search(list(v)) for k, v in values.items()}


def trial_config(cfg: Config, point: dict[str, Any], epochs: int) -> Config:
    """The train config a trial runs: the point applied, a checkpoint and a sample grid at
    ``epochs`` (where the trial stops), ``cfg.train.epochs`` as the schedule."""
    typed = {k: POINT_KEYS[k](v) for k, v in point.items()}
    seed = {"seed": typed.pop("seed")} if "seed" in typed else {}
    cfg = cfg.with_point(typed)
    return replace(cfg, train={"checkpoint_every": epochs, "sample_every": epochs, **seed})


TRIAL_CPU = 0.01  # a trial process that only waits for its TorchTrainer (0 is rejected)


def trial_resources(workers: int, use_gpu: bool, cpus: float) -> dict[str, float]:
    """What Tune reserves for a trial: all of it for a one-worker trial, which trains in its
    own process; a token for a trial whose TorchTrainer reserves its workers itself."""
    if workers == 1:
        return {"cpu": cpus, "gpu": 1.0} if use_gpu else {"cpu": cpus}
    return {"cpu": TRIAL_CPU}  # 0: a TorchTrainer's trial, whatever its workers


@dataclass(frozen=True)
class SearchJob:
    """What every trial of one search shares (absolute paths: trials run in other folders).

    Attributes:
        data_path, fid_ref: the training split and the per-epoch FID's reference (FidRef's fields).
        use_gpu, workers, cpus, direct: a trial's resources: GPU or CPU, DDP ranks, torch
            threads when it trains in its own process (``direct``), else in a TorchTrainer.
        storage, name: Ray's storage and the search's name (a TorchTrainer trial's run is
            ``<name>-<trial id>``).
        epochs: where every trial stops, with a checkpoint (the search's budget).
        parent_run_id, tracking_uri, tags: the MLflow run each trial's run nests under.
        export_dir: where a finished trial writes its final generator (the ablation).
    """

    data_path: str
    fid_ref: dict[str, Any]
    use_gpu: bool
    storage: str
    name: str
    parent_run_id: str | None
    tracking_uri: str
    epochs: int
    workers: int
    cpus: float
    direct: bool
    tags: dict[str, str]
    export_dir: str | None = None


def _trial(config: dict[str, Any], *, base: dict[str, Any], job: SearchJob) -> None:
    """One Tune trial: a nested MLflow run, and the shared loop in this process (one worker)
    or in a TorchTrainer (several).

    Args:
        config: the point (keys of POINT_KEYS).
        base: the validated configuration the point is applied to.
        job: what every trial of the search shares.
    """
    base_cfg = load_config(base, "trial config")
    point = {k: config[k] for k in POINT_KEYS if k in config}
    cfg = trial_config(base_cfg, point, job.epochs)
    os.environ["MLFLOW_TRACKING_URI"] = job.tracking_uri  # the trial runs in another cwd
    trial_id = tune.get_context().get_trial_id()
    run_id = None
    restored = tune.get_checkpoint()  # a trial restored after a failure or an interruption
    if job.parent_run_id:
        # a trial restored after an interruption continues the run it started (the epochs
        # after its checkpoint are logged again, the later value wins, as in the train stage)
        run_id = tracking.find_run(cfg.tracking.experiment, job.parent_run_id,
                                   "resgan.trial_id", trial_id)
        if run_id is None:
            run_id = tracking.start_run(
                cfg.tracking.experiment, f"trial-{trial_id}", params=point,
                parent_run_id=job.parent_run_id,
                tags={**job.tags, "resgan.trial_id": trial_id})
    # Tune retries a failed trial (FailureConfig) from its last checkpoint: right for a
    # process the machine killed, wasted on a point that diverges (it diverges again).
    diverged = Path(tune.get_context().get_trial_dir()) / "diverged.txt"
    if diverged.exists():
        raise DivergedError(f"{diverged.read_text()} (not trained again on a retry)")
    try:
        if job.direct:
            state = _fit_here(cfg, job, run_id, restored)
        else:
            state = _fit_ray_train(cfg, job, run_id, trial_id)
    except DivergedError as exc:
        diverged.parent.mkdir(parents=True, exist_ok=True)
        diverged.write_text(str(exc))
        raise
    if job.export_dir and state:  # the ablation evaluates every trial's final G_ema
        ckpt_io.export_generator(state, Path(job.export_dir) / f"{trial_id}.pt")


def _fit_here(cfg: Config, job: SearchJob, run_id: str | None, restored) -> dict[str, Any]:
    """The loop in the trial's own process, reporting to Tune (checkpoints in Tune's storage)."""
    training = TrainingJob.build(cfg, data_path=job.data_path, fid_ref=FidRef(**job.fid_ref),
                                 run_id=run_id, tracking_uri=job.tracking_uri,
                                 stop_epoch=job.epochs, threads=max(1, int(job.cpus)))
    return run_job(training, report=reporting_to(tune.report), restored=restored,
                   device="cuda" if job.use_gpu else "cpu")


def _fit_ray_train(cfg: Config, job: SearchJob, run_id: str | None,
                   trial_id: str) -> dict[str, Any]:
    """A TorchTrainer of ``job.workers`` DDP ranks; its reports reach Tune."""
    trainer = make_trainer(
        cfg, data_path=job.data_path, fid_ref=FidRef(**job.fid_ref),
        name=f"{job.name}-{trial_id}", storage=job.storage,
        num_workers=job.workers, use_gpu=job.use_gpu,
        cpus_per_worker=1.0 - TRIAL_CPU / job.workers, stop_epoch=job.epochs,
        run_id=run_id, tracking_uri=job.tracking_uri, callbacks=[TuneReportCallback()])
    # The driver sets the run's final status: Tune may stop us mid-fit. A wait for the
    # workers that runs out raises ResourceWaitError, which ends the whole search
    # (WaitBounds below).
    result = fit_bounded(trainer)
    if result.checkpoint is None:
        return {}
    with result.checkpoint.as_directory() as d:
        return ckpt_io.load(d)


def _wait_error(exc: BaseException | None) -> ResourceWaitError | None:
    """The ResourceWaitError inside a trial's error: Ray wraps it in a RayTaskError (also an
    instance of it, but its message is the trial's traceback)."""
    found = None
    for _ in range(10):
        if exc is None:
            break
        if isinstance(exc, ResourceWaitError):
            found = exc
        exc = getattr(exc, "cause", None) or exc.__cause__
    return found


class WaitBounds(Callback):
    """Ends the search with ResourceWaitError when a trial has waited RESGAN_TRIAL_WAIT_S
    to start (Tune itself waits for resources forever), or when a trial's Ray Train
    workers waited in vain (the next trials would only wait as long again)."""

    def __init__(self, experiment: str):
        self.experiment = experiment
        self.bound = wait_bound(TRIAL_WAIT_ENV)
        self._pending_since: dict[str, float] = {}
        self._failed: ResourceWaitError | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:  # restored with the experiment
        # monotonic times of another process; a wait that ran out there is over
        self.__dict__.update(state, _pending_since={}, _failed=None)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        # Raised here: Tune passes an error from this hook on as it is (one from
        # on_trial_error would come out as a TuneError holding a traceback).
        if self._failed is not None:
            raise self._failed
        now = time.monotonic()
        for t in trials:
            if t.status != "PENDING":
                self._pending_since.pop(t.trial_id, None)
                continue
            if now - self._pending_since.setdefault(t.trial_id, now) > self.bound:
                asks = ", ".join(f"{v:g} {k}" for k, v in
                                 t.placement_group_factory.required_resources.items())
                raise ResourceWaitError(
                    f"waited {self.bound:g} s for {asks} to start Tune trial {t.trial_id} of "
                    f"{self.experiment}; the cluster has {cluster_free()} "
                    f"(set {TRIAL_WAIT_ENV} to wait longer)")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        # Tune has just written the error next to the trial's local files (its copy in the
        # storage path comes later).
        try:
            with open(trial.pickled_error_file, "rb") as f:
                err = _wait_error(cloudpickle.load(f))
        except Exception:  # no pickled error, or one that does not load here: not ours
            return
        if err is not None:
            self._failed = ResourceWaitError(str(err))


class TrialProgress(Callback):
    """A bar over the trials on the stage's terminal (resgan.console), with the trials
    running and the best FID so far; Tune's own status tables go to the log."""

    def __init__(self, total: int):
        self.total = total
        self._bar = None
        self._best = math.inf
        self._shown: tuple[int, str] | None = None

    def __getstate__(self) -> dict[str, Any]:  # saved with the experiment: no bar
        return {"total": self.total}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["total"])

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self._bar is None:
            self._bar = console.progress(self.total, None, "trial")
        ended = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        best = f", best FID {self._best:.3g}" if self._best < math.inf else ""
        postfix = f"{running} running{best}"
        if (ended, postfix) != self._shown:  # (a disabled bar, outside a stage, keeps no postfix)
            self._shown = (ended, postfix)
            self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(ended - self._bar.n)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        fid = result.get(METRIC)
        if fid is not None and math.isfinite(fid):
            self._best = min(self._best, fid)

    def on_experiment_end(self, trials: list, **info) -> None:
        if self._bar is not None:
            failed = sum(t.status == "ERROR" for t in trials)
            best = f"best FID {self._best:.3g}" if self._best < math.inf else "no FID"
            self._bar.set_postfix_str(best + (f", {failed} failed" if failed else ""), refresh=False)
            self._bar.update(sum(t.status in ("TERMINATED", "ERROR") for t in trials) - self._bar.n)
            self._bar.close()


def raise_wait_error(grid) -> None:
    """Raise the ResourceWaitError of a trial in Tune's results, if any (WaitBounds stops
    the search at the next step; a trial that was the last one ends it anyway)."""
    for res in grid:
        if (err := _wait_error(res.error)) is not None:
            raise ResourceWaitError(str(err))


class TrialsFailedError(ResganError, RuntimeError):
    """No trial of a search finished (one line: how many failed and why)."""


@dataclass
class TrialRow:
    trial_id: str
    point: dict[str, Any]  # the trial's depth, lr_g, lr_d, ... (keys of POINT_KEYS)
    fid: float  # last FID the trial reported (NaN if none)
    best_fid: float
    epochs: int  # epochs the trial ran before it finished or was stopped
    images_per_s: float  # mean training speed over its epochs after the first (warm-up)
    status: str  # finished, stopped (by ASHA), failed
    checkpoint: str | None = None  # its last checkpoint: a local path or a URI
    run_id: str | None = None  # its nested MLflow run
    process: str | None = None  # host:pid it trained in (trials one after another share one)
    error: str | None = None  # a failed trial's error, its last line

    def flat(self) -> dict[str, Any]:
        """One CSV row: the point's keys as columns."""
        return {"trial_id": self.trial_id, **self.point, "fid": self.fid,
                "best_fid": self.best_fid, "epochs": self.epochs,
                "images_per_s": self.images_per_s, "status": self.status}


def run_search(cfg: Config, *, data_path: str, fid_ref: FidRef, use_gpu: bool,
               parent_run_id: str | None, name: str | None = None,
               restore: bool = False) -> list[TrialRow]:
    """Run the search (or restore the interrupted experiment ``name``); one row per trial.

    Every trial trains ``cfg`` (train.epochs as its schedule) with its point applied, and
    ASHA stops it at a rung or at tune.epochs, where it has a checkpoint."""
    t = cfg.tune
    budget = min(t.epochs, cfg.train.epochs)
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=budget,
                              grace_period=min(t.grace_period, budget),
                              reduction_factor=t.reduction_factor)
    return run_trials(cfg, search_space(cfg), num_samples=t.num_samples, epochs=budget,
                      scheduler=scheduler, workers=t.workers_per_trial,
                      max_concurrent=t.max_concurrent, seed=t.seed, data_path=data_path,
                      fid_ref=fid_ref, use_gpu=use_gpu, parent_run_id=parent_run_id,
                      name=name or f"tune-{time.strftime('%Y%m%d-%H%M%S')}", restore=restore)


def run_trials(cfg: Config, param_space: dict[str, Any], *, num_samples: int, epochs: int,
               scheduler: Any, workers: int, max_concurrent: int, seed: int, data_path: str,
               fid_ref: FidRef, use_gpu: bool, parent_run_id: str | None, name: str,
               export_dir: str | None = None, restore: bool = False,
               direct: bool | None = None, reuse_actors: bool | None = None) -> list[TrialRow]:
    """Run one Tune experiment of training trials over ``param_space``.

    Args:
        cfg: the base configuration every point is applied to (its train.epochs is the
            learning-rate schedule's length).
        param_space: Tune's space over keys of POINT_KEYS (choices or grid_search).
        num_samples, epochs, scheduler: Tune's samples, the epoch a trial stops at (with a
            checkpoint), early stopping (None: every trial runs to ``epochs``).
        workers: DDP ranks per trial: 1 trains in the trial's own process with all the CPUs
            (or the GPU) of its share of the cluster; more run a Ray Train TorchTrainer.
        max_concurrent, seed: trials at once (capped by the cluster's CPUs), sampling seed.
        export_dir: when given, each finished trial writes its final generator there as
            ``<trial_id>.pt``.
        direct: train in the trial's own process (default: when ``workers`` is 1); False
            runs a TorchTrainer even for one worker (bench/overhead.py compares the two).
        reuse_actors: run the next trial in the process of one that ended (default: for
            trials that train in their own process): no new Python process, no imports of
            torch, Ray and MLflow again, per trial. A TorchTrainer's trial process does
            little, and its workers are started per trial anyway.
        restore: carry on the experiment ``name`` in Ray's storage when there is one
            (Tune's experiment restore: finished and failed trials are not run again,
            unfinished ones start again).
    Returns:
        One row per trial, failed trials included.
    """
    # Each trial's Train workers sit outside Tune's own accounting: start no more trials
    # than the cluster can give workers to, or the extra ones wait on a worker group. A
    # one-worker trial trains in its own process with an equal share of the CPUs.
    cpus = ray.cluster_resources().get("CPU", 1.0)
    concurrent = max(1, min(max_concurrent, int(cpus // workers)))
    share = max(1.0, float(int(cpus // concurrent)))
    direct = workers == 1 if direct is None else direct
    if direct and workers != 1:
        raise ValueError("a trial trains in its own process with one worker only")
    reuse_actors = direct if reuse_actors is None else reuse_actors
    # Trials run in their own working directories: hand them absolute paths.
    job = SearchJob(data_path=str(Path(data_path).resolve()), fid_ref=vars(fid_ref.resolved()),
                    use_gpu=use_gpu, storage=storage_path(cfg.ray.storage_path), name=name,
                    parent_run_id=parent_run_id, tracking_uri=tracking.tracking_uri(),
                    epochs=epochs, workers=workers, cpus=share, direct=direct,
                    tags=tracking.provenance_tags(),
                    export_dir=str(Path(export_dir).resolve()) if export_dir else None)
    resources = trial_resources(workers if direct else 0, use_gpu, share)

    def search(experiment: str, restore: bool):
        grid = _tuner(cfg, param_space, job=dataclasses.replace(job, name=experiment),
                      num_samples=num_samples, scheduler=scheduler, concurrent=concurrent,
                      seed=seed, restore=restore, reuse_actors=reuse_actors,
                      resources=resources).fit()
        raise_wait_error(grid)
        return grid

    # Tune's own SIGINT handler ends the experiment "gracefully" and returns the trials so
    # far: an interrupted stage (Ctrl-C, `dvc queue kill`) would then write a best.json from
    # a partial search. Without it the interrupt fails the stage; the next run restores it.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    grid = search(name, restore)
    if restore and any(not set(param_space) <= set(res.config or {}) for res in grid):
        # Tune's saved state can lose a pending trial's configuration when the stage is
        # killed at the wrong moment: that trial cannot train. Search again, from the start.
        print(f"tune: the interrupted search {name} lost a trial's configuration when it was "
              f"killed; searching again from the start as {name}-again", flush=True)
        grid = search(f"{name}-again", restore=False)
    rows = _rows(grid, epochs)
    runs = _close_trial_runs(cfg.tracking.experiment, parent_run_id, rows)
    for r in rows:
        r.run_id = runs.get(r.trial_id)
    return rows


def _tuner(cfg: Config, param_space: dict[str, Any], *, job: SearchJob, num_samples: int,
           scheduler: Any, concurrent: int, seed: int, restore: bool,
           reuse_actors: bool, resources: dict[str, float]) -> tune.Tuner:
    """The Tuner of one search (see ``run_trials``), named ``job.name``, or the restored one
    of that name."""
    name = job.name
    grid_points = math.prod(len(v["grid_search"]) for v in param_space.values()
                            if isinstance(v, dict) and "grid_search" in v)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=cfg.model_dump(mode="json"), job=job),
        resources)
    exp_path = f"{storage_path(cfg.ray.storage_path).rstrip('/')}/{name}"
    if restore and tune.Tuner.can_restore(exp_path):
        return tune.Tuner.restore(exp_path, trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, scheduler=scheduler, num_samples=num_samples,
            reuse_actors=reuse_actors,
            search_alg=BasicVariantGenerator(max_concurrent=concurrent, random_state=seed)),
        # A trial killed by the machine (Ray's memory monitor, a lost node) is retried
        # from its last checkpoint, at most train.max_failures times.
        run_config=tune.RunConfig(name=name, storage_path=storage_path(cfg.ray.storage_path),
                                  failure_config=tune.FailureConfig(
                                      max_failures=cfg.train.max_failures),
                                  verbose=1, callbacks=[WaitBounds(name),
                                                        TrialProgress(num_samples * grid_points)]),
    )


def _rows(grid, epochs: int) -> list[TrialRow]:
    """One row per trial of a finished search, failed trials included."""
    rows = []
    for res in grid:
        hist = res.metrics_dataframe
        fids = _column(hist, METRIC)
        speeds = _column(hist, "images_per_s")[1:] or _column(hist, "images_per_s")
        done = int(res.metrics.get("training_iteration", 0)) if res.metrics else 0
        if res.error is not None:
            status = "failed"
        elif done < epochs:
            status = "stopped"
        else:
            status = "finished"
        point = {k: POINT_KEYS[k](v) for k, v in (res.config or {}).items() if k in POINT_KEYS}
        rows.append(TrialRow(
            trial_id=_trial_id(res), point=point,
            fid=fids[-1] if fids else math.nan, best_fid=min(fids) if fids else math.nan,
            epochs=done, images_per_s=sum(speeds) / len(speeds) if speeds else math.nan,
            status=status, checkpoint=_uri(res.checkpoint),
            error=None if res.error is None else
            f"{type(res.error).__name__}: {(str(res.error).strip().splitlines() or [''])[-1][:200]}",
            process=f"{res.metrics['hostname']}:{res.metrics['pid']}" if res.metrics else None))
    return rows


def _uri(checkpoint) -> str | None:
    """Where a Tune checkpoint is: a local path, or a URI on remote storage."""
    if checkpoint is None:
        return None
    scheme = getattr(checkpoint.filesystem, "type_name", "local")
    return checkpoint.path if scheme == "local" else f"{scheme}://{checkpoint.path}"


def _column(frame, key: str) -> list[float]:
    return [] if frame is None or key not in frame else [float(v) for v in frame[key]]


def _trial_id(res) -> str:
    if res.metrics and "trial_id" in res.metrics:  # Tune adds it to every report
        return str(res.metrics["trial_id"])
    return res.path.rstrip("/").split("/")[-1]


_RUN_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}


def _close_trial_runs(experiment: str, parent_run_id: str | None,
                      rows: list["TrialRow"]) -> dict[str, str]:
    """Give every nested trial run its final status (ASHA ends a stopped trial's process,
    so the trial itself cannot).

    Returns:
        trial id -> its MLflow run id.
    """
    if not parent_run_id:
        return {}
    c = tracking.client()
    status = {r.trial_id: r.status for r in rows}
    runs = {}
    for run in c.search_runs([tracking.experiment_id(experiment)],
                             filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"):
        trial_id = run.data.tags.get("resgan.trial_id", "")
        st = status.get(trial_id, "failed")
        c.set_tag(run.info.run_id, "resgan.trial_status", st)
        c.set_terminated(run.info.run_id, _RUN_STATUS[st])
        runs[trial_id] = run.info.run_id
    return runs


def best_trial(rows: list[TrialRow]) -> TrialRow:
    """The trial with the lowest final FID among those that ran the whole budget (ASHA let
    them through every rung), so that candidates are compared at the same images seen."""
    ok = [r for r in rows if r.status == "finished" and math.isfinite(r.fid)]
    if not ok:
        failed = [r for r in rows if r.status == "failed"]
        why = (f"; {len(failed)} of {len(rows)} failed after their retries "
               f"(train.max_failures), e.g. trial {failed[0].trial_id}: {failed[0].error}"
               if failed else "")
        raise TrialsFailedError(f"no trial ran to tune.epochs{why}; see the stage's log")
    return min(ok, key=lambda r: r.fid)
