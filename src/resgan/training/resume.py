"""Resuming after a lost driver: one Ray run name per training configuration.

A stage names its Ray run ``<prefix>-<key>``, the key a hash of everything that decides
the result (the model, train and data sections, the training split's content and the
library's source). Started again after being killed, the stage finds the same name in
Ray's storage: Ray Train hands the newest checkpoint of that run to the workers (and
Tune restores the experiment), and the stage re-opens the same MLflow run. A changed
configuration gives another key and starts fresh; so does a run that completed.

A small JSON file beside the run, ``<storage>/<name>.resgan.json``, records the MLflow run
and whether the run completed. It is written through pyarrow's filesystem layer, so
``ray.storage_path`` may be a local path or an ``s3://`` / ``gs://`` URI.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from resgan.config import Config
from resgan.metrics.cache import fingerprint

_SRC = Path(__file__).resolve().parents[1]  # the resgan package


def code_fingerprint() -> str:
    """sha256 over the library's Python sources (a code change starts a fresh run)."""
    h = hashlib.sha256()
    for f in sorted(_SRC.rglob("*.py")):
        h.update(f.relative_to(_SRC).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_key(cfg: Config, data_path: str | Path, *extra: Any) -> str:
    """The hash naming a run: config sections that shape training, data, code, ``extra``."""
    doc = {"model": cfg.model.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json"),
           "data": cfg.data.model_dump(mode="json"), "split": fingerprint(data_path),
           "code": code_fingerprint(), "extra": [str(e) for e in extra]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


class RunRecord:
    """The JSON beside a Ray run: its MLflow run id and whether it completed."""

    def __init__(self, storage: str, name: str):
        import pyarrow.fs

        self.fs, root = pyarrow.fs.FileSystem.from_uri(storage if "://" in storage
                                                       else Path(storage).resolve().as_uri())
        self.path = f"{root.rstrip('/')}/{name}.resgan.json"
        self.name = name

    def read(self) -> dict[str, Any] | None:
        import pyarrow.fs

        if self.fs.get_file_info(self.path).type == pyarrow.fs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(self.path) as f:
            return json.loads(f.read().decode())

    def write(self, **data: Any) -> None:
        self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(self.path) as f:
            f.write(json.dumps(data, sort_keys=True).encode())


def resumable_run(storage: str, prefix: str, key: str) -> tuple[RunRecord, dict[str, Any] | None]:
    """The run to use for ``key``: the interrupted one if there is one, else a fresh name.

    Returns:
        (its record, the interrupted run's record data or None when starting fresh).
    """
    record = RunRecord(storage, f"{prefix}-{key}")
    data = record.read()
    if data is None:
        return record, None
    if data.get("complete"):  # the same configuration again: a new run, not a no-op
        return RunRecord(storage, f"{prefix}-{key}-{time.strftime('%Y%m%d-%H%M%S')}"), None
    return record, data
