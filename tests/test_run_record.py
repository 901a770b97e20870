"""Run records: who holds a train/tune run, and when another stage may resume it.

Two copies of the repository with the same config share ``ray.storage_path``: a run held
by a live stage must never be adopted; one whose holder is gone is resumed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from resgan.runtime import runs
from resgan.runtime.runs import RunRecord, holder_alive, resumable_run


def _record(storage, name, **holder):
    RunRecord(str(storage), name).write(mlflow_run_id="abc", complete=False,
                                        **({"holder": holder} if holder else {}))


@pytest.fixture()
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_live_holder_on_this_host_is_not_adopted(tmp_path, live_pid, capsys):
    _record(tmp_path, "train-k", host=socket.gethostname(), pid=live_pid, heartbeat=time.time())
    record, interrupted = resumable_run(str(tmp_path), "train", "k")
    assert interrupted is None
    assert record.name.startswith("train-k-") and record.name != "train-k"
    assert f"pid {live_pid}" in capsys.readouterr().out  # one line says who holds it


def test_a_killed_holder_on_this_host_is_resumed_at_once(tmp_path, monkeypatch):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(proc.stdout)  # its heartbeat is fresh, but the process is gone
    _record(tmp_path, "train-k", host=socket.gethostname(), pid=dead, heartbeat=time.time())
    record, interrupted = resumable_run(str(tmp_path), "train", "k")
    assert record.name == "train-k" and interrupted["mlflow_run_id"] == "abc"
    # the stage then claims it with the interrupted record's data, as open_run does
    monkeypatch.setattr(runs, "CLAIM_SETTLE_S", 0.1)
    assert record.claim(**interrupted)
    holder = record.read()["holder"]
    assert holder["pid"] == os.getpid() and record.read()["mlflow_run_id"] == "abc"
    record.release(mlflow_run_id="abc", complete=True)


def test_a_killed_holder_not_yet_reaped_is_gone(tmp_path):
    """Right after a SIGKILL the holder can linger as a zombie: it holds nothing."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    import psutil

    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:  # exited, not waited for
        assert time.time() < deadline
        time.sleep(0.05)
    try:
        _record(tmp_path, "train-k", host=socket.gethostname(), pid=proc.pid, heartbeat=time.time())
        record, interrupted = resumable_run(str(tmp_path), "train", "k")
        assert record.name == "train-k" and interrupted is not None
    finally:
        proc.wait()


def test_records_are_replaced_whole(tmp_path):
    record = RunRecord(str(tmp_path), "train-k")
    record.write(mlflow_run_id="a", complete=False)
    record.write(mlflow_run_id="b", complete=True)
    assert record.read() == {"mlflow_run_id": "b", "complete": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-k.resgan.json"]  # no leftovers


@pytest.mark.parametrize("age, adopted", [(runs.STALE_S - 30, False), (runs.STALE_S + 30, True)])
def test_another_hosts_holder_is_judged_by_its_heartbeat(tmp_path, age, adopted):
    _record(tmp_path, "tune-k", host="another-node", pid=1, heartbeat=time.time() - age)
    record, interrupted = resumable_run(str(tmp_path), "tune", "k")
    assert (record.name == "tune-k") is adopted
    assert (interrupted is not None) is adopted


def test_records_without_a_holder_are_resumed_and_completed_runs_are_not(tmp_path):
    _record(tmp_path, "train-old")  # written before records had holders
    assert resumable_run(str(tmp_path), "train", "old")[1] is not None
    RunRecord(str(tmp_path), "train-done").write(mlflow_run_id="x", complete=True)
    record, interrupted = resumable_run(str(tmp_path), "train", "done")
    assert interrupted is None and record.name.startswith("train-done-")


def test_claimed_and_killed_before_its_mlflow_run_starts_afresh(tmp_path):
    RunRecord(str(tmp_path), "train-k").write(complete=False, holder={
        "host": "gone", "pid": 1, "heartbeat": time.time() - 2 * runs.STALE_S})
    record, interrupted = resumable_run(str(tmp_path), "train", "k")
    assert record.name == "train-k" and interrupted is None  # nothing to resume


def test_a_live_claim_without_its_mlflow_run_yet_is_not_adopted(tmp_path, live_pid):
    """Between its claim and its MLflow run the holder's record has no run id: still its."""
    RunRecord(str(tmp_path), "tune-k").write(complete=False, holder={
        "host": socket.gethostname(), "pid": live_pid, "heartbeat": time.time()})
    record, interrupted = resumable_run(str(tmp_path), "tune", "k")
    assert record.name != "tune-k" and interrupted is None


def test_a_claim_overwritten_in_the_same_moment_is_lost(tmp_path, monkeypatch, live_pid):
    monkeypatch.setattr(runs, "CLAIM_SETTLE_S", 0.5)
    record = RunRecord(str(tmp_path), "train-k")
    other = RunRecord(str(tmp_path), "train-k")
    import threading

    late = threading.Timer(0.2, lambda: other.write(complete=False, holder={
        "host": socket.gethostname(), "pid": live_pid, "heartbeat": time.time()}))
    late.start()
    assert record.claim(complete=False) is False  # the other write came last: it holds it
    late.join()
    assert RunRecord(str(tmp_path), "train-j").claim(complete=False) is True


def test_hold_keeps_the_heartbeat_fresh_and_release_ends_it(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(runs, "CLAIM_SETTLE_S", 0.1)
    record = RunRecord(str(tmp_path), "train-k")
    assert record.claim(complete=False)
    record.update(mlflow_run_id="abc", complete=False)
    first = record.read()["holder"]
    assert first["pid"] > 0 and first["host"] == socket.gethostname()
    time.sleep(1.0)
    later = record.read()["holder"]
    assert later["heartbeat"] > first["heartbeat"]  # beats kept coming
    assert holder_alive(record.read()) is not None  # this very process: alive
    record.release(mlflow_run_id="abc", complete=True)
    final = json.loads(record.fs.open_input_stream(record.path).read().decode())
    assert final == {"mlflow_run_id": "abc", "complete": True}  # no holder left
    time.sleep(0.5)
    assert record.read() == final  # and no beat after the release


def test_a_late_claim_against_a_live_holder_is_refused(tmp_path, monkeypatch):
    """Two claimants in this very process (same host and pid): the nonce tells them apart,
    and the one that comes after the first's settle window finds a live holder."""
    monkeypatch.setattr(runs, "CLAIM_SETTLE_S", 0.2)
    first, second = RunRecord(str(tmp_path), "train-k"), RunRecord(str(tmp_path), "train-k")
    assert first.claim(complete=False) is True
    time.sleep(0.3)  # a little over the settle window: the case that once gave True twice
    assert second.claim(complete=False) is False
    assert record_nonce(first) == first._nonce
    first.release(complete=True)


def record_nonce(record) -> str:
    return record.read()["holder"]["nonce"]


def test_a_holder_whose_record_was_taken_stops_beating_and_leaves_it(tmp_path, monkeypatch,
                                                                     live_pid, capsys):
    monkeypatch.setattr(runs, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(runs, "CLAIM_SETTLE_S", 0.05)
    record = RunRecord(str(tmp_path), "train-k")
    assert record.claim(complete=False)
    theirs = {"host": socket.gethostname(), "pid": live_pid, "nonce": "theirs",
              "heartbeat": time.time()}
    RunRecord(str(tmp_path), "train-k").write(complete=False, holder=theirs)
    time.sleep(0.8)
    assert record_nonce(record) == "theirs"  # not overwritten by our beats
    assert "was claimed by another stage" in capsys.readouterr().out
    record.release(complete=True)  # not ours any more: left alone
    assert record.read()["holder"]["nonce"] == "theirs"


def test_two_writers_of_one_epoch_never_mix_their_bytes(tmp_path):
    """Two processes' worth of writers saving epoch 3 at once: the file is one of the two
    states, whole, and no temporary file is left."""
    import threading

    import torch

    from resgan.training import checkpoint as ckpt

    def state(v):
        return {"epoch": 3, "G_kwargs": {"z_dim": 4, "channels": 4, "depth": 1, "resolution": 8,
                                         "img_channels": 1, "residual": True},
                "w": torch.full((200_000,), float(v))}

    for _ in range(5):
        threads = [threading.Thread(target=ckpt.keep, args=(str(tmp_path), state(v)))
                   for v in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = ckpt.load(tmp_path / "checkpoint_000003")["w"]
        assert got.unique().numel() == 1 and float(got[0]) in (1.0, 2.0)
    assert [p.name for p in (tmp_path / "checkpoint_000003").iterdir()] == ["checkpoint.pt"]


def test_a_truncated_newest_checkpoint_is_skipped_for_the_one_before(tmp_path, capsys):
    import torch

    from resgan.training import checkpoint as ckpt

    kw = {"z_dim": 4, "channels": 4, "depth": 1, "resolution": 8, "img_channels": 1,
          "residual": True}
    for epoch in (1, 2):
        ckpt.keep(str(tmp_path), {"epoch": epoch, "G_kwargs": kw, "w": torch.zeros(10)})
    newest = tmp_path / "checkpoint_000002" / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:200])
    assert ckpt.newest(str(tmp_path)).endswith("checkpoint_000001")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "checkpoint_000002 cannot be loaded" in out


def test_a_checkpoint_declaring_huge_shapes_is_refused_before_allocating(tmp_path):
    import torch

    from resgan.training import checkpoint as ckpt

    path = tmp_path / "generator.pt"
    torch.save({"G_kwargs": {"z_dim": 64, "channels": 100_000, "depth": 2, "resolution": 16,
                             "img_channels": 1, "residual": True}, "G_ema": {}}, path)
    assert path.stat().st_size < 4096
    t0 = time.perf_counter()
    with pytest.raises(ckpt.CheckpointError, match=r"generator.pt: G_kwargs.channels = 100000, "
                                                   r"not an int in 4-1024"):
        ckpt.generator_from(ckpt.load(path))
    assert time.perf_counter() - t0 < 2
