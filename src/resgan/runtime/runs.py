"""Run records: one Ray run name per training configuration, resumed after a lost driver.

A stage names its Ray run ``<prefix>-<key>``, the key a hash of everything that decides
the result (the model, train and data sections, the training split's content and the
library's source). Started again after being killed, the stage finds the same name in
Ray's storage: Ray Train hands the newest checkpoint of that run to the workers (and
Tune restores the experiment), and the stage re-opens the same MLflow run. A changed
configuration gives another key and starts fresh; so does a run that completed.

A small JSON file beside the run, ``<storage>/<name>.resgan.json``, records the MLflow run,
whether the run completed, and who holds it: host, pid and a heartbeat that the holding
stage refreshes every ``HEARTBEAT_S`` seconds. A run still held by a live stage (another
copy of the repository with the same config, sharing ``ray.storage_path``) is never
adopted: the newcomer starts a run of its own. A holder is gone when, on this host, its
process no longer exists, or, on any host, its heartbeat is older than ``STALE_S``; its run
is then resumed. The record is written through pyarrow's filesystem layer, so
``ray.storage_path`` may be a local path or an ``s3://`` / ``gs://`` URI.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resgan.config import Config
from resgan.console import say
from resgan.metrics.cache import fingerprint
from resgan.runtime.files import atomic_write, filesystem
from resgan.runtime.processes import alive

_SRC = Path(__file__).resolve().parents[1]  # the resgan package
HEARTBEAT_S = 30.0  # a holding stage rewrites its record this often
STALE_S = 180.0  # a holder whose heartbeat is this old is gone (6 missed beats)
CLAIM_SETTLE_S = 1.0  # two stages claiming one record at once: the later write wins


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
        self.fs, root = filesystem(storage)
        self.path = f"{root.rstrip('/')}/{name}.resgan.json"
        self.name = name

    def read(self) -> dict[str, Any] | None:
        import pyarrow.fs

        if self.fs.get_file_info(self.path).type == pyarrow.fs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(self.path) as f:
            return json.loads(f.read().decode())

    def write(self, **data: Any) -> None:
        """Replace the record whole: written beside it, then moved over it (a reader, or a
        kill mid-write, never sees half a record on a local or shared filesystem)."""
        atomic_write(self.path, json.dumps(data, sort_keys=True), fs=self.fs)

    def claim(self, **data: Any) -> bool:
        """Write the record with this process as its holder (a fresh nonce); False when a
        live holder is already there, or when another claimant's write replaced this one
        within CLAIM_SETTLE_S (its write came last: it holds the run). Claimed, the
        heartbeat is kept fresh from a daemon thread until ``release`` or the process ends;
        a beat that finds another holder's nonce in the record stops, says so in one line,
        and leaves that record alone."""
        import uuid

        data.pop("holder", None)  # an interrupted run's record: its old holder is replaced
        current = self.read() or {}
        if current.get("holder") and holder_alive(current):
            return False  # taken since the caller looked
        self._nonce = uuid.uuid4().hex
        self._data, self._stop = data, threading.Event()
        self._beat()
        time.sleep(CLAIM_SETTLE_S)  # a second claimant's write lands in this window
        if not self._ours():
            return False
        self._thread = threading.Thread(target=self._beating, name="resgan-run-heartbeat",
                                        daemon=True)
        self._thread.start()
        return True

    def _ours(self) -> bool:
        return ((self.read() or {}).get("holder") or {}).get("nonce") == self._nonce

    def update(self, **data: Any) -> None:
        """New record data (e.g. the MLflow run id), still held by this process."""
        data.pop("holder", None)
        self._data = data
        self._beat()

    def release(self, **data: Any) -> None:
        """Stop the heartbeat and write the final record (no holder), unless another
        claimant holds the record now."""
        if getattr(self, "_thread", None) is not None:
            self._stop.set()
            self._thread.join(timeout=10)
        if getattr(self, "_nonce", None) is None or self._ours():
            self.write(**data)

    def _beat(self) -> None:
        self.write(**self._data, holder={"host": socket.gethostname(), "pid": os.getpid(),
                                         "nonce": self._nonce, "heartbeat": time.time()})

    def _beating(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if not self._ours():
                    say(f"warning: run record {self.path} was claimed by another stage: this "
                        f"one stops refreshing it")
                    return
                self._beat()
            except OSError as exc:  # storage briefly unreachable: the next beat tries again
                say(f"warning: run record {self.path}: heartbeat not written ({exc})")


def holder_alive(data: dict[str, Any], now: float | None = None) -> str | None:
    """Who holds a run record, when that holder is alive (e.g. "host h, pid 12, heartbeat
    4 s ago"); None when it has none or it is gone."""
    h = data.get("holder")
    if not h:  # completed, or written before records had holders
        return None
    age = (time.time() if now is None else now) - float(h.get("heartbeat", 0))
    if age > STALE_S:
        return None
    if h.get("host") == socket.gethostname() and not alive(int(h["pid"])):
        return None  # that stage was killed: its run is interrupted
    return f"host {h.get('host')}, pid {h.get('pid')}, heartbeat {age:.0f} s ago"


def separate_run(storage: str, prefix: str, key: str) -> RunRecord:
    """A run of ``key`` under a name of its own (time and pid: unique on this host)."""
    return RunRecord(storage, f"{prefix}-{key}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")


def resumable_run(storage: str, prefix: str, key: str) -> tuple[RunRecord, dict[str, Any] | None]:
    """The run to use for ``key``: the interrupted one if there is one, else a fresh name.

    Returns:
        (its record, the interrupted run's record data or None when starting fresh).
    """
    record = RunRecord(storage, f"{prefix}-{key}")
    data = record.read()
    if data is None:
        return record, None
    fresh = separate_run(storage, prefix, key)
    if data.get("complete"):  # the same configuration again: a new run, not a no-op
        return fresh, None
    if holder := holder_alive(data):  # the same configuration running elsewhere right now
        say(f"{prefix}: {record.name} is running ({holder}): starting a separate run "
            f"{fresh.name}")
        return fresh, None
    if "mlflow_run_id" not in data:  # claimed, then killed before its MLflow run existed
        return record, None
    return record, data


def open_run(storage: str, stage: str, key: str, start: Callable[[str], str]):
    """The Ray run name and MLflow run of a resumable stage (see above).

    An interrupted run of the same key is carried on: its name, its MLflow run (set back
    to RUNNING); one that a live stage holds is left alone (see above).
    Otherwise ``start(ray_run_name)`` creates the MLflow run. This process then holds the
    record (a heartbeat) until the stage calls ``record.release(..., complete=True)``.
    Returns:
        (the run's record, the MLflow run id, whether it resumes).
    """
    from resgan import tracking

    record, interrupted = resumable_run(storage, stage, key)
    if not record.claim(**(interrupted or {"complete": False})):  # this process holds it now
        taken = record.name
        record, interrupted = separate_run(storage, stage, key), None
        say(f"{stage}: another stage took {taken} at the same moment: starting a separate "
            f"run {record.name}")
        record.claim(complete=False)  # a name with this pid in it: no one else's
    if interrupted:
        run_id = interrupted["mlflow_run_id"]
        tracking.client().update_run(run_id, status="RUNNING")
        say(f"{stage}: resuming the interrupted run {record.name} (MLflow run {run_id})")
        return record, run_id, True
    run_id = start(record.name)
    record.update(mlflow_run_id=run_id, complete=False)
    return record, run_id, False
