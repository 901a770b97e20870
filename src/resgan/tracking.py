"""MLflow runs: the tracking store, parent/nested runs, per-epoch metrics and images.

The default store is embedded: ``sqlite:///mlruns/mlflow.db`` with artifacts under
``mlruns/``. ``MLFLOW_TRACKING_URI`` overrides it (for example a shared ``mlflow server``).
Ray workers run in other working directories, so a relative sqlite path is made absolute
before it is handed to them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"


def tracking_uri() -> str:
    """The tracking URI in force, with a relative sqlite path made absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        path = Path(uri[len(prefix):]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = prefix + str(path)
    return uri


def client():
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())


def experiment_id(name: str) -> str:
    """Get or create the experiment; on the embedded store its artifacts go under mlruns/."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri().startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ:
        location = (Path("mlruns") / "artifacts" / name).resolve().as_uri()
    return c.create_experiment(name, artifact_location=location)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def start_run(experiment: str, name: str, params: dict[str, Any] | None = None,
              parent_run_id: str | None = None, tags: dict[str, str] | None = None) -> str:
    """Create a run (nested under ``parent_run_id`` if given), log its params; return its id."""
    from mlflow.entities import Param

    c = client()
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = c.create_run(experiment_id(experiment), run_name=name, tags=all_tags)
    if params:
        items = list(flatten(params).items())
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params a call
            c.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
    return run.info.run_id


def metric_history(run_id: str, keys: list[str]) -> list[dict[str, float]]:
    """Per-step values of ``keys`` in a run, one row per step (``epoch`` = step)."""
    c = client()
    rows: dict[int, dict[str, float]] = {}
    for key in keys:
        # a resumed run logs the epochs after its checkpoint again: the later value wins
        for m in sorted(c.get_metric_history(run_id, key), key=lambda m: m.timestamp):
            rows.setdefault(m.step, {"epoch": m.step})[key] = round(m.value, 6)
    return [rows[s] for s in sorted(rows)]


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


class MlflowRunLogger:
    """Rank 0's sink for per-epoch metrics (one call per epoch) and sample grids."""

    def __init__(self, uri: str, run_id: str):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), ts, step) for k, v in metrics.items() if k != "epoch"])

    def log_image(self, image: np.ndarray, name: str) -> None:
        self.client.log_image(self.run_id, image, artifact_file=name)
