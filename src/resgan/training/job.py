"""One training, described once: ``TrainingJob``, and ``run_job``, the one way to run it.

A stage (or a Tune trial) builds the job; a Ray Train worker, Ray Train's local mode and a
trial that trains in its own process all run it through ``run_job``. The job holds plain
values only, with absolute paths, so it crosses Ray's process boundary as a dict
(``to_dict`` / ``from_dict``) and means the same on every node. Ray-free: the caller hands
over Ray's checkpoint of the run and its report function.

``TuneChoice`` is what one stage hands the next on disk: the tune stage's ``best.json``,
written and read only through this type. The train stage builds its job from params.yaml
with the choice's point, continuing the choice's checkpoint (``TrainingJob.from_checkpoint``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from resgan.config import SEARCHABLE, Config, ConfigError, load_config
from resgan.metrics.scoring import FidRef
from resgan.runtime.files import atomic_write


@dataclass(frozen=True)
class TrainingJob:
    """What one training needs, whoever runs it.

    Attributes:
        config: the validated configuration (``Config.model_dump(mode="json")``).
        data_path: the training split (``.npz``), absolute.
        fid_ref: what the per-epoch FID is measured against (``FidRef``'s fields, absolute
            paths); None: no monitoring FID.
        run_id: the MLflow run rank 0 logs to (None: none), in the store at ``tracking_uri``.
        tracking_uri: that store.
        from_checkpoint: a checkpoint folder or URI to continue when the run has none of its
            own (e.g. tune's best trial, continued by the train stage).
        stop_epoch: stop at this epoch, with a checkpoint (None: at ``train.epochs``).
        threads: torch threads of each worker.
        keep_dir: Ray Train's local mode only: where the run keeps its checkpoints (Ray Train
            keeps none in local mode), and resumes from the newest of them.
    """

    config: dict[str, Any]
    data_path: str
    fid_ref: dict[str, Any] | None = None
    run_id: str | None = None
    tracking_uri: str | None = None
    from_checkpoint: str | None = None
    stop_epoch: int | None = None
    threads: int = 1
    keep_dir: str | None = None

    @classmethod
    def build(cls, cfg: Config, *, data_path: str | Path, fid_ref: FidRef | None,
              **rest: Any) -> "TrainingJob":
        """The job of ``cfg`` on ``data_path``, paths made absolute; ``rest``: the other fields."""
        return cls(config=cfg.model_dump(mode="json"), data_path=str(Path(data_path).resolve()),
                   fid_ref=None if fid_ref is None else vars(fid_ref.resolved()), **rest)

    def cfg(self) -> Config:
        return load_config(self.config, "training job")

    def reference(self) -> FidRef | None:
        return None if self.fid_ref is None else FidRef(**self.fid_ref)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingJob":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class TuneChoice(BaseModel):
    """The tune stage's choice, as ``best.json``: the point the search picked and the trial
    that trained it, which the train stage continues.

    Attributes:
        searched: the keys params.yaml sets to "tune" ([]: nothing was searched; the other
            fields are then empty).
        point: the chosen value of each searched key (keys of ``config.SEARCHABLE``).
        checkpoint: the chosen trial's checkpoint, relative to the workspace (best.json is
            committed to git: no machine's absolute path in it) or a URI.
        trial_epochs: the epochs that trial trained; the train stage goes on from there.
        fid: the trial's monitoring FID after them (``features``, ``fid_samples`` samples).
        trial_id, trial_run_id: the trial and its MLflow run (its history is copied into
            the train run).
        mlflow_run_id: the search's MLflow run.
        trials, failed, stopped: how many trials ran, failed, and were stopped by ASHA.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    searched: list[str]
    point: dict[str, Any] = {}
    checkpoint: str | None = None
    trial_epochs: int = 0
    fid: float | None = None
    features: str | None = None
    fid_samples: int | None = None
    trial_id: str | None = None
    trial_run_id: str | None = None
    mlflow_run_id: str | None = None
    trials: int = 0
    failed: int = 0
    stopped: int = 0

    def write(self, path: str | Path) -> None:
        atomic_write(path, self.model_dump_json(indent=2) + "\n")  # readers never see half

    @classmethod
    def read(cls, path: str | Path) -> "TuneChoice":
        """best.json at ``path``, or a ConfigError in one line (missing, unreadable, or not
        written by this version's tune stage)."""
        redo = "run the tune stage again (dvc repro tune)"
        try:
            choice = cls.model_validate(json.loads(Path(path).read_text()))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read tune's choice ({exc.strerror}): {redo}") from None
        except (ValueError, ValidationError) as exc:
            first = exc.errors()[0] if isinstance(exc, ValidationError) else None
            where = ".".join(map(str, first["loc"])) if first else ""
            what = (f"{where}: " if where else "") + first["msg"] if first else "not JSON"
            raise ConfigError(f"{path} is not a tune choice of this version ({what}): {redo}") from None
        if unknown := sorted(set(choice.point) - set(SEARCHABLE)):
            raise ConfigError(f"{path}: point has keys that cannot be searched ({', '.join(unknown)}); "
                              f"allowed: {', '.join(SEARCHABLE)}: {redo}")
        return choice

    @staticmethod
    def portable(path: str | None, workspace: str | Path = ".") -> str | None:
        """A checkpoint inside the workspace relative to it (what ``checkpoint`` holds; the
        inverse of ``start``); a URI or a path elsewhere as it is."""
        if not path or "://" in path:
            return path
        try:
            return str(Path(path).resolve().relative_to(Path(workspace).resolve()))
        except ValueError:
            return path

    def start(self, workspace: str | Path = ".") -> str | None:
        """The checkpoint the train job continues (``TrainingJob.from_checkpoint``): absolute,
        since Ray Train's workers run in other folders; a URI as it is; None when nothing was
        searched or the folder is gone (e.g. ray.storage_path cleaned)."""
        if not self.checkpoint or "://" in self.checkpoint:
            return self.checkpoint
        path = Path(workspace, self.checkpoint).resolve()
        return str(path) if path.exists() else None


def with_choice(cfg: Config, path: str | Path = "outputs/tune/best.json",
                keys: list[str] | None = None) -> Config:
    """``cfg`` with tune's chosen values (the choice at ``path``) for ``keys`` (default:
    every key set to "tune"); ``cfg`` itself when there are none (best.json is not read)."""
    keys = cfg.searched() if keys is None else keys
    return cfg.with_tuned(TuneChoice.read(path).point, str(path), keys) if keys else cfg


def run_job(job: TrainingJob, *, report: Callable[[dict[str, float], dict | None], None],
            restored: Any = None, rank: int = 0, world_size: int = 1,
            device: Any = "cpu") -> dict[str, Any]:
    """Train ``job`` on this worker: from ``restored`` (Ray's checkpoint of this run, after a
    restart or an interruption) if given, else from ``job.from_checkpoint`` if set, else
    from scratch; rank 0 logs to the job's MLflow run. Returns the final checkpoint state."""
    import torch

    from resgan.training import checkpoint as ckpt_io
    from resgan.training.loop import fit

    from_state = None
    if restored is not None:
        with restored.as_directory() as d:
            from_state = ckpt_io.load(d, device="cpu")
    elif job.from_checkpoint:
        from_state = ckpt_io.load(job.from_checkpoint, device="cpu")
    logger = None
    if rank == 0 and job.run_id:
        from resgan.tracking import MlflowRunLogger

        logger = MlflowRunLogger(job.tracking_uri, job.run_id)
    caller_threads = torch.get_num_threads()  # local mode and trials: the caller's process
    torch.set_num_threads(max(1, int(job.threads)))
    try:
        return fit(job.cfg(), data_path=job.data_path, report=report, rank=rank,
                   world_size=world_size, device=device, fid_ref=job.reference(),
                   from_state=from_state, logger=logger, stop_epoch=job.stop_epoch)
    finally:
        torch.set_num_threads(caller_threads)
