"""What the stage scripts (pipeline/), the benches and the tests share: read params.yaml
as DVC does and validate it, run a stage under its console (resgan.console) and fail in
one line, the monitoring reference and atomic JSON outputs. (Resumable runs:
resgan.runtime.runs.open_run.)"""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from resgan.config import Config, ConfigError, EvalConfig, load_config
from resgan.console import Console
from resgan.errors import ResganError
from resgan.runtime.files import atomic_write
from resgan.metrics.scoring import (  # noqa: F401 (re-exported for the stage scripts)
    FidRef, classifier_path, features_dir, prepared_extractor, stats_path)

PARAMS = "params.yaml"


def read_params(path: str = PARAMS) -> Config:
    """Parse params.yaml as DVC does (YAML 1.2) and validate every section up front."""
    try:
        raw = YAML(typ="safe").load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root)") from None
    except Exception as exc:  # a YAML syntax error
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return load_config(raw, path)


def run(main: Callable[[], str | None], stage: str | None = None) -> None:
    """Run a stage's main under a Console (resgan.console): a line when it starts, the
    headline ``main`` returns when it ends; configuration and input errors become one line
    and exit 1, an unexpected error its traceback (on the terminal and in the log)."""
    from resgan.tracking import move_credentials

    try:
        move_credentials()  # before anything can print or log the tracking URI
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    con = Console(stage or Path(sys.argv[0]).stem.lstrip("-") or "stage").open()  # ("-c")
    try:
        headline = main()
    except ResganError as exc:  # a wrong value, a missing file, a wait that ran out, ...
        con.error(f"error: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        con.error(f"{con.stage}: interrupted")
        raise
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            con.failed(exc)
            sys.exit(1)
        con.error(f"error: no space left on the device of {exc.filename or 'the log or an output'}"
                  f" ({con.log_path or 'no log'}): free space and run the stage again")
        sys.exit(1)
    except Exception as exc:  # a bug: its traceback
        con.failed(exc)
        sys.exit(1)
    con.done(headline)


def monitor_ref(prepared: str | Path, e: EvalConfig) -> FidRef:
    """What tune trials and training measure their per-epoch FID against: the classifier
    when the data has labels, else Inception."""
    if classifier_path(prepared).is_file():
        return FidRef(stats_path=stats_path(prepared, "classifier"), features="classifier",
                      classifier_path=str(classifier_path(prepared)))
    return FidRef(stats_path=stats_path(prepared, "inception"), features="inception",
                  inception_weights=e.inception_weights, dims=e.inception_dims)


def require_batch_fits(cfg: Config, prepared: str | Path) -> int:
    """Refuse, before any work, a ``train.batch_size`` larger than the prepared training set
    (every epoch would train on no batch: the loader keeps whole batches only). Returns the
    training set's size."""
    try:
        n = int(read_json(Path(prepared) / "metrics.json")["stats_samples"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{prepared}/metrics.json: missing or unreadable: run "
                          f"`dvc repro prepare` first") from None
    if cfg.train.batch_size > n:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is larger than the training "
                          f"set ({n:,} images in {prepared}): an epoch would train on no batch; "
                          f"allowed at most {n:,}")
    return n


def eval_extractor(prepared: str | Path, e: EvalConfig, name: str | None = None):
    """The extractor ``name`` (default eval.features) as the evaluate stage builds it."""
    return prepared_extractor(prepared, name or e.features, inception_weights=e.inception_weights,
                              dims=e.inception_dims)


def write_json(path: str | Path, data: dict[str, Any], first: tuple[str, ...] = ()) -> None:
    """``data`` as JSON, its keys sorted except ``first``, which lead in that order (DVC
    shows a metrics file's keys as columns in the file's order)."""
    ordered = {k: data[k] for k in first if k in data} | {k: data[k] for k in sorted(data) if k not in first}
    atomic_write(path, json.dumps(ordered, indent=2) + "\n")  # readers never see half a file


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
