"""What every stage script shares: read params.yaml, validate it, fail in one line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from resgan.config import Config, ConfigError, load_config
from resgan.metrics.features import FeatureError

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


def run(main: Callable[[], Any]) -> None:
    """Run a stage's main; turn configuration and input errors into one line and exit 1."""
    try:
        main()
    except (ConfigError, FeatureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def stats_path(prepared: str | Path, features: str) -> str:
    """Where prepare caches the training split's statistics for an extractor."""
    return f"{prepared}/stats/train-{features}.npz"


def monitor_ref(prepared: str | Path):
    """What tune trials and training measure their per-epoch FID against: the classifier."""
    from resgan.training.loop import FidRef

    return FidRef(stats_path=stats_path(prepared, "classifier"), features="classifier",
                  classifier_path=f"{prepared}/classifier.pt")


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: readers never see half a file


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
