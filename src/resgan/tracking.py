"""MLflow runs: the tracking store, parent/nested runs, per-epoch metrics and images.

The default store is embedded: ``sqlite:///mlruns/mlflow.db`` with artifacts under
``mlruns/`` of the DVC workspace. ``MLFLOW_TRACKING_URI`` overrides it (for example a shared
``mlflow server``). A relative sqlite path is resolved against the workspace (see
``workspace_root``: an experiment that DVC runs in a temporary copy tracks into the store of
the workspace it came from) and made absolute before it is handed to Ray workers, which run
in other working directories.

Every run carries its provenance (``provenance_tags``): the git commit and the DVC
experiment it ran in, so a run leads to its experiment and back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"


def workspace_root() -> Path:
    """The DVC workspace this process works for.

    ``dvc exp run --temp`` and ``dvc queue start`` run each experiment in a copy under
    ``<workspace>/.dvc/tmp/exps/``; DVC sets ``DVC_ROOT`` to the workspace there (and to
    the repository root under a plain ``dvc repro``). Outside DVC: the working directory,
    or the workspace above it when it is such a copy.
    """
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    cwd = Path.cwd().resolve()
    parts = cwd.parts
    for i in range(1, len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def move_credentials(env: dict[str, str] | None = None) -> bool:
    """Take credentials out of ``MLFLOW_TRACKING_URI``: ``http://user:pw@host`` (as users
    paste it) becomes ``http://host``, with the user and password in MLflow's own
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (values already set there are
    kept). Then no URI that the project or MLflow prints, logs, tags or uploads carries the
    password, in this process or in any it starts (Ray's, DVC's). Also turns off MLflow's
    "View run ... at <url>" lines. Every stage and the CLI call this first.

    Returns whether credentials were moved.
    Raises:
        ValueError: an "@" that is not a plain ``user:password@host`` (for example a password
            with an unescaped "/", "?" or "#"): the message does not repeat the URI.
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    env = os.environ if env is None else env
    env.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = env.get("MLFLOW_TRACKING_URI", "")
    if "@" not in uri.partition("://")[2]:
        return False
    try:
        parts = urlsplit(uri)
    except ValueError:
        parts = None
    if parts is None or "@" not in parts.netloc:
        raise ValueError("MLFLOW_TRACKING_URI has an '@' that is not a plain "
                         "scheme://user:password@host: set MLFLOW_TRACKING_USERNAME and "
                         "MLFLOW_TRACKING_PASSWORD instead and leave them out of the URI (or "
                         "percent-encode the password)")
    userinfo, _, host = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    env.setdefault("MLFLOW_TRACKING_USERNAME", unquote(user))
    if has_password:
        env.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(password))
    env["MLFLOW_TRACKING_URI"] = urlunsplit(parts._replace(netloc=host))
    return True


def tracking_uri() -> str:
    """The tracking URI in force, with a relative sqlite path made absolute (against the
    DVC workspace, so experiments in DVC's temporary copies share the workspace's store)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        path = (workspace_root() / uri[len(prefix):]).resolve()
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
        location = (workspace_root() / "mlruns" / "artifacts" / name).resolve().as_uri()
    return c.create_experiment(name, artifact_location=location)


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD of the git repository at ``cwd`` ("unknown" outside one)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def provenance_tags() -> dict[str, str]:
    """Where a run comes from: the git commit (the experiment's baseline commit inside DVC's
    temporary copies) and the DVC experiment name (``workspace`` for a plain ``dvc repro``).
    Ray processes inherit RESGAN_GIT_COMMIT from the stage driver, which sets it."""
    commit = os.environ.get("RESGAN_GIT_COMMIT") or git_commit()
    os.environ.setdefault("RESGAN_GIT_COMMIT", commit)
    tags = {"mlflow.source.git.commit": commit, "resgan.git_commit": commit,
            "resgan.dvc_exp": os.environ.get("DVC_EXP_NAME") or "workspace"}
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["resgan.dvc_baseline"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


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
    all_tags = {**provenance_tags(), **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = c.create_run(experiment_id(experiment), run_name=name, tags=all_tags)
    if params:
        items = list(flatten(params).items())
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params a call
            c.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
    return run.info.run_id


def find_run(experiment: str, parent_run_id: str, tag: str, value: str) -> str | None:
    """The newest run nested under ``parent_run_id`` whose tag ``tag`` is ``value``, if any
    (a Tune trial restored after an interruption finds the run it started before)."""
    found = client().search_runs(
        [experiment_id(experiment)],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{tag}` = '{value}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else None


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
    """End a stage's run; the stage's log so far (resgan.console) goes with it as
    ``logs/<stage>.log``, so that it survives a queued experiment's temporary workspace."""
    from resgan import console

    c = client()
    log = console.log_file()
    if log is not None and log.is_file():
        try:
            c.log_artifact(run_id, str(log), artifact_path="logs")
        except Exception as exc:  # the log is a convenience: never fail a run over it
            print(f"warning: {log} not logged to MLflow run {run_id}: {exc}", flush=True)
    c.set_terminated(run_id, status=status)


def log_dataset(run_id: str, path: str | Path, name: str, context: str = "training") -> str:
    """Log a split file (``save_split``'s .npz) as the run's dataset input; return its digest.

    What the MLflow UI shows in a run's Dataset column: ``name``, the digest (a hash of the
    split's images, the same one prepare keys its statistics by, so it does not change when
    prepare writes the same images again) and the file as the source, with ``context``
    (``mlflow.data.context``, e.g. "training").
    """
    import mlflow.data
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from resgan.metrics.cache import fingerprint

    path = Path(path).resolve()
    with np.load(path, allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    digest = fingerprint(x)
    # a source object, not a path string: a string is ambiguous to MLflow (it warns)
    d = mlflow.data.from_numpy(x, targets=y, source=LocalArtifactDatasetSource(str(path)),
                               name=name, digest=digest).to_dict()  # with schema and profile
    entity = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"],
                     source=d["source"], schema=d.get("schema"), profile=d.get("profile"))
    client().log_inputs(run_id, datasets=[
        DatasetInput(entity, tags=[InputTag(key="mlflow.data.context", value=context)])])
    return digest


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
