"""Ray Train and Ray Tune on a real local Ray runtime (2 CPUs), tiny models."""

import math

import pytest
import ray

from resgan import tracking
from resgan.config import replace
from resgan.data import load_split, save_split
from resgan.training import checkpoint as ckpt_io
from resgan.training.loop import FidRef

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(num_cpus=2, logging_level="WARNING")
    yield
    ray.shutdown()


def _ref(prepared):
    return FidRef(str(prepared / "stats.npz"), "classifier", str(prepared / "classifier.pt"))


@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])  # wgan-gp: double backward beside DDP
def test_train_two_workers_ddp(ray_runtime, tiny_cfg, prepared, mlflow_store, tmp_path, loss):
    from resgan.training.ray_train import make_trainer

    run_id = tracking.start_run("test", "train")
    cfg = replace(tiny_cfg, train={"loss": loss})
    trainer = make_trainer(cfg, data_path=str(prepared / "train.npz"), fid_ref=_ref(prepared),
                           name="t2", storage=str(tmp_path / "ray"), num_workers=2,
                           use_gpu=False, run_id=run_id, tracking_uri=tracking.tracking_uri())
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        state = ckpt_io.load(d)
    assert state["epoch"] == 2 and state["config"]["train"]["num_workers"] == 2
    # only rank 0 logs: one value per epoch, not one per worker
    hist = tracking.metric_history(run_id, ["loss_d", "loss_g", "fid_classifier_n100", "images_per_s"])
    assert all(math.isfinite(h["loss_d"]) and math.isfinite(h["loss_g"]) for h in hist)
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(math.isfinite(h["fid_classifier_n100"]) and h["images_per_s"] > 0 for h in hist)
    arts = [a.path for a in tracking.client().list_artifacts(run_id, "samples")]
    assert arts == ["samples/epoch_0001.png", "samples/epoch_0002.png"]


def test_tune_two_trials_nested_runs(ray_runtime, tiny_cfg, prepared, mlflow_store):
    from resgan.tuning import best_trial, run_search

    parent = tracking.start_run("test", "tune")
    cfg = replace(tiny_cfg, tracking={"experiment": "test"})
    rows = run_search(cfg, data_path=str(prepared / "train.npz"), fid_ref=_ref(prepared),
                      use_gpu=False, parent_run_id=parent)
    assert len(rows) == 2
    assert all(r.status in ("finished", "stopped") and r.point["depth"] in (1, 2) for r in rows)
    assert all(5e-5 <= r.point["lr_g"] <= 1e-3 and 5e-5 <= r.point["lr_d"] <= 1e-3 for r in rows)
    assert all(r.images_per_s > 0 for r in rows)
    best = best_trial(rows)
    assert best.fid == min(r.fid for r in rows)
    runs = tracking.client().search_runs(
        [tracking.experiment_id("test")], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(runs) == 2
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs), [r.info.status for r in runs]
    assert {r.data.tags["resgan.trial_id"] for r in runs} == {r.trial_id for r in rows}
    assert all({"loss_d", "fid_classifier_n100"} <= set(r.data.metrics) for r in runs)


def test_diverging_trial_fails_and_the_search_goes_on(ray_runtime, tiny_cfg, prepared,
                                                       mlflow_store, tmp_path):
    """Losses that turn NaN end a trial as failed; the next trial still runs."""
    from resgan.tuning import best_trial, run_search

    x, y = load_split(prepared / "train.npz")
    x = x.clone()
    x[::3] = float("nan")
    save_split(tmp_path / "bad.npz", x.numpy(), y.numpy())
    parent = tracking.start_run("test", "tune")
    cfg = replace(tiny_cfg, tracking={"experiment": "test"}, tune={"max_concurrent": 1})
    rows = run_search(cfg, data_path=str(tmp_path / "bad.npz"), fid_ref=_ref(prepared),
                      use_gpu=False, parent_run_id=parent)
    assert [r.status for r in rows] == ["failed", "failed"]
    runs = tracking.client().search_runs(
        [tracking.experiment_id("test")], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]
    with pytest.raises(RuntimeError, match="every trial failed"):
        best_trial(rows)


def test_lost_worker_resumes_from_the_checkpoint(ray_runtime, tiny_cfg, prepared, tmp_path):
    """SIGKILL one real Ray Train worker process mid-training: FailureConfig restarts the
    worker group, which carries on from the newest checkpoint, not from scratch."""
    import os
    import signal
    import threading
    import time

    from ray.util.state import list_actors

    from resgan.training.ray_train import make_trainer

    cfg = replace(tiny_cfg, train={"epochs": 24, "checkpoint_every": 2, "sample_every": 24})
    storage = tmp_path / "ray"
    trainer = make_trainer(cfg, data_path=str(prepared / "train.npz"), fid_ref=_ref(prepared),
                           name="lost-worker", storage=str(storage), num_workers=2,
                           use_gpu=False, max_failures=2)
    out = {}
    thread = threading.Thread(target=lambda: out.update(result=trainer.fit()))
    thread.start()
    deadline = time.time() + 300
    # two checkpoints written: the first is surely registered with the controller
    while len(list((storage / "lost-worker").glob("checkpoint_*"))) < 2:
        assert time.time() < deadline and thread.is_alive(), "no checkpoint was written"
        time.sleep(0.2)
    workers = list_actors(address=ray.get_runtime_context().gcs_address,
                          filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    assert len(workers) == 2
    os.kill(workers[0].pid, signal.SIGKILL)
    thread.join(timeout=600)
    with out["result"].checkpoint.as_directory() as d:
        state = ckpt_io.load(d)
    assert state["epoch"] == 24
    assert len(state["resumed_from"]) == 1  # one restart, from a checkpoint epoch
    resumed = state["resumed_from"][0]
    assert 2 <= resumed < 24 and resumed % 2 == 0
    assert len(state["rng"]) == 2  # both ranks' RNG states are in the checkpoint
