"""Ray Train and Ray Tune on a real local Ray runtime (2 CPUs), tiny models."""

import math

import pytest
import ray

from resgan import tracking
from resgan.config import replace
from resgan.data import load_split, save_split
from resgan.training import checkpoint as ckpt_io
from resgan.metrics.scoring import FidRef

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(address="local", num_cpus=2, logging_level="WARNING")  # never another instance
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
    cfg = replace(tiny_cfg, tracking={"experiment": "test"}, model={"depth": "tune"},
                  train={"lr_g": "tune", "lr_d": "tune", "epochs": 3})
    rows = run_search(cfg, data_path=str(prepared / "train.npz"), fid_ref=_ref(prepared),
                      use_gpu=False, parent_run_id=parent)
    assert len(rows) == 2
    assert all(r.status in ("finished", "stopped") and r.point["depth"] in (1, 2) for r in rows)
    assert all(set(r.point) == {"depth", "lr_g", "lr_d"} for r in rows)  # only the "tune" keys
    assert all(5e-5 <= r.point["lr_g"] <= 1e-3 and 5e-5 <= r.point["lr_d"] <= 1e-3 for r in rows)
    assert all(r.images_per_s > 0 for r in rows)
    best = best_trial(rows)
    assert best.status == "finished" and best.epochs == 2  # tune.epochs, not train.epochs (3)
    assert best.fid == min(r.fid for r in rows if r.status == "finished")
    state = ckpt_io.load(best.checkpoint)  # where the train stage continues from
    assert state["epoch"] == 2 and state["config"]["train"]["epochs"] == 3
    assert state["config"]["model"]["depth"] == best.point["depth"]
    runs = tracking.client().search_runs(
        [tracking.experiment_id("test")], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(runs) == 2
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs), [r.info.status for r in runs]
    assert {r.data.tags["resgan.trial_id"] for r in runs} == {r.trial_id for r in rows}
    assert all({"loss_d", "fid_classifier_n100"} <= set(r.data.metrics) for r in runs)


def test_trial_continued_by_ray_train_is_the_uninterrupted_run(ray_runtime, tiny_cfg, prepared,
                                                               tmp_path):
    """A one-worker trial stopped at tune.epochs (the Ray-free loop inside the Tune function),
    then continued to train.epochs by a one-worker TorchTrainer as the train stage does, ends
    where one uninterrupted run of the loop ends: same schedule, same RNG streams."""
    import torch
    from ray import tune

    from resgan.training.loop import fit
    from resgan.training.ray_train import make_trainer
    from resgan.tuning import run_trials

    cfg = replace(tiny_cfg, train={"epochs": 3, "lr_decay": "linear"},
                  ray={"storage_path": str(tmp_path / "ray")})
    data = str(prepared / "train.npz")
    # max_concurrent 2: each trial gets 1 of the 2 CPUs, so 1 torch thread, as below (the
    # thread count changes the float reductions, hence the weights after a few epochs)
    rows = run_trials(cfg, {"depth": tune.grid_search([2])}, num_samples=1, epochs=1,
                      scheduler=None, workers=1, max_concurrent=2, seed=0, data_path=data,
                      fid_ref=_ref(prepared), use_gpu=False, parent_run_id=None, name="stop1")
    (row,) = rows
    assert (row.status, row.epochs) == ("finished", 1)
    point = replace(cfg, model={"depth": 2})
    trainer = make_trainer(point, data_path=data, fid_ref=None, name="continue",
                           storage=str(tmp_path / "ray"), num_workers=1, use_gpu=False,
                           from_checkpoint=row.checkpoint)
    with trainer.fit().checkpoint.as_directory() as d:
        continued = ckpt_io.load(d)
    assert continued["epoch"] == 3 and continued["resumed_from"] == [1]
    torch.set_num_threads(1)
    whole = fit(point, data_path=data, report=lambda m, s: None)
    for key in ("G", "D", "G_ema"):
        for name, w in whole[key].items():
            assert torch.allclose(continued[key][name], w, rtol=0, atol=1e-6), (key, name)
    # the learning rate followed train.epochs' linear schedule, not the trial's length
    assert continued["opt_G"]["param_groups"][0]["lr"] == pytest.approx(cfg.train.lr_g / 3)


def test_trial_in_a_reused_process_is_the_trial_in_a_new_one(ray_runtime, tiny_cfg, prepared,
                                                               tmp_path):
    """Trials one after another run in one process (Tune's reuse_actors), and a trial there
    ends exactly where the same trial in a process of its own ends: nothing of the trial
    before it leaks in (seeds, threads, the MLflow client, the monitor)."""
    from ray import tune

    from resgan.tuning import run_trials

    cfg = replace(tiny_cfg, train={"epochs": 2}, ray={"storage_path": str(tmp_path / "ray")})
    kw = dict(num_samples=1, epochs=2, scheduler=None, workers=1, max_concurrent=1, seed=0,
              data_path=str(prepared / "train.npz"), fid_ref=_ref(prepared), use_gpu=False,
              parent_run_id=None)
    reused = {r.point["seed"]: r for r in
              run_trials(cfg, {"seed": tune.grid_search([0, 1])}, name="reused", **kw)}
    (fresh,) = run_trials(cfg, {"seed": tune.grid_search([1])}, name="fresh",
                          reuse_actors=False, **kw)
    assert all(r.status == "finished" for r in [*reused.values(), fresh])
    assert reused[0].process == reused[1].process != fresh.process
    assert reused[1].fid == fresh.fid  # bit for bit
    assert reused[0].fid != reused[1].fid  # and the seed did change the trial


def test_diverging_trial_fails_and_the_search_goes_on(ray_runtime, tiny_cfg, prepared,
                                                       mlflow_store, tmp_path):
    """Losses that turn NaN end a trial as failed; the next trial still runs."""
    from resgan.tuning import best_trial, run_search

    x, y = load_split(prepared / "train.npz")
    x = x.clone()
    x[::3] = float("nan")
    save_split(tmp_path / "bad.npz", x.numpy(), y.numpy())
    parent = tracking.start_run("test", "tune")
    cfg = replace(tiny_cfg, tracking={"experiment": "test"}, tune={"max_concurrent": 1},
                  model={"depth": "tune"})
    rows = run_search(cfg, data_path=str(tmp_path / "bad.npz"), fid_ref=_ref(prepared),
                      use_gpu=False, parent_run_id=parent)
    assert [r.status for r in rows] == ["failed", "failed"]
    runs = tracking.client().search_runs(
        [tracking.experiment_id("test")], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]
    with pytest.raises(RuntimeError, match=r"no trial ran to tune.epochs; 2 of 2 failed after "
                                           r"their retries .*DivergedError"):
        best_trial(rows)


def test_a_trial_killed_by_the_machine_is_retried(ray_runtime, tiny_cfg, prepared, tmp_path):
    """SIGKILL a running Tune trial's process (as Ray's memory monitor or a lost node does):
    Tune's FailureConfig (train.max_failures) starts it again and the trial finishes its
    budget, instead of failing the search."""
    import os
    import signal
    import threading
    import time

    from ray import tune
    from ray.util.state import list_actors

    from resgan.tuning import run_trials

    storage = tmp_path / "ray"
    cfg = replace(tiny_cfg, train={"epochs": 12, "max_failures": 2},
                  ray={"storage_path": str(storage)})
    out = {}
    thread = threading.Thread(target=lambda: out.update(rows=run_trials(
        cfg, {"seed": tune.grid_search([0])}, num_samples=1, epochs=12, scheduler=None,
        workers=1, max_concurrent=1, seed=0, data_path=str(prepared / "train.npz"),
        fid_ref=_ref(prepared), use_gpu=False, parent_run_id=None, name="killed")))
    thread.start()
    deadline = time.time() + 300
    while not any(p.read_text().strip() for p in storage.glob("killed/*/result.json")):
        assert time.time() < deadline and thread.is_alive(), "the trial never reported"
        time.sleep(0.2)
    actors = [a for a in list_actors(address=ray.get_runtime_context().gcs_address,
                                     filters=[("state", "=", "ALIVE")])
              if "_trial" in a.class_name or "ImplicitFunc" in a.class_name]
    assert len(actors) == 1, [a.class_name for a in actors]
    os.kill(actors[0].pid, signal.SIGKILL)
    thread.join(timeout=600)
    (row,) = out["rows"]
    assert row.status == "finished" and row.epochs == 12 and row.error is None
    assert not row.process.endswith(f":{actors[0].pid}")  # it finished in a new process


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


@pytest.fixture
def cpus_taken(ray_runtime):
    """All the cluster's CPUs held by a placement group, as the leaked groups of trials that
    ASHA stopped held them when another Ray instance broke the cleaner's address lookup."""
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group([{"CPU": ray.cluster_resources()["CPU"]}])
    ray.get(pg.ready(), timeout=60)
    yield
    remove_placement_group(pg)


def test_train_workers_wait_is_bounded(cpus_taken, tiny_cfg, prepared, tmp_path, monkeypatch):
    """No CPU for the workers: fit_bounded fails with one clear line after the bound."""
    import time

    from resgan.training.ray_train import fit_bounded, make_trainer
    from resgan.runtime.cluster import ResourceWaitError

    monkeypatch.setenv("RESGAN_WORKER_WAIT_S", "3")
    monkeypatch.delenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", raising=False)  # restored after
    trainer = make_trainer(tiny_cfg, data_path=str(prepared / "train.npz"), fid_ref=_ref(prepared),
                           name="starved", storage=str(tmp_path / "ray"), num_workers=1,
                           use_gpu=False)
    t0 = time.monotonic()
    with pytest.raises(ResourceWaitError) as err:
        fit_bounded(trainer)
    assert time.monotonic() - t0 < 60
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("waited 3 s for the 1 Ray Train worker(s) (1 CPU each) of run starved;")
    assert "the cluster has 0 of 2 CPUs free (set RESGAN_WORKER_WAIT_S" in msg


def _tune_alone(tmp_path, fn, resources):
    from ray import tune

    from resgan.tuning import WaitBounds, raise_wait_error

    tuner = tune.Tuner(tune.with_resources(fn, resources),
                       run_config=tune.RunConfig(name="bounded", storage_path=str(tmp_path),
                                                 verbose=0, callbacks=[WaitBounds("bounded")]))
    raise_wait_error(tuner.fit())  # as run_trials does


def test_tune_trial_wait_is_bounded(cpus_taken, tmp_path, monkeypatch):
    """A trial that cannot start (Tune would wait forever) ends the search in one line."""
    from resgan.runtime.cluster import ResourceWaitError

    monkeypatch.setenv("RESGAN_TRIAL_WAIT_S", "3")
    with pytest.raises(ResourceWaitError) as err:
        _tune_alone(tmp_path, lambda config: None, {"cpu": 0.01})
    msg = str(err.value)
    assert msg.startswith("waited 3 s for 0.01 CPU to start Tune trial ") and "\n" not in msg
    assert msg.endswith("of bounded; the cluster has 0 of 2 CPUs free (set RESGAN_TRIAL_WAIT_S "
                        "to wait longer)")


def test_trial_whose_workers_waited_in_vain_ends_the_search(ray_runtime, tmp_path):
    """The next trials would only wait as long again: the search stops with that line."""
    from resgan.runtime.cluster import ResourceWaitError

    def starved(config):  # a local function: Ray ships it by value (this module is not
        from resgan.runtime.cluster import ResourceWaitError  # importable by workers)

        raise ResourceWaitError("waited 1 s for the workers of run x; the cluster has 0 CPUs")

    with pytest.raises(ResourceWaitError, match=r"^waited 1 s for the workers of run x; "):
        _tune_alone(tmp_path, starved, {"cpu": 0.01})


def test_stage_ray_is_found_by_its_own_address_beside_another(ray_runtime):
    """Two Ray instances on one machine (this test's and the stage's): a nested actor of the
    stage's job uses the state API without an address and gets its own cluster; the stage's
    workers run at the stage's niceness."""
    import os
    import subprocess
    import sys

    code = """
import ray
from resgan.runtime.cluster import init_ray
init_ray()

@ray.remote(num_cpus=0)
class Probe:
    def look(self):
        import os
        from ray.util.state import list_actors
        return os.environ["RAY_ADDRESS"], len(list_actors()), os.nice(0)

@ray.remote(num_cpus=0, runtime_env={"env_vars": {"X": "1"}})  # as Ray Train's controller
class Parent:
    def probe(self):
        return ray.get(Probe.options(lifetime="detached").remote().look.remote())

import os
print("RESULT", ray.get_runtime_context().gcs_address, *ray.get(Parent.remote().probe.remote()),
      os.nice(0))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    _, own, seen, actors, worker_nice, stage_nice = line.split()
    assert seen == own != ray.get_runtime_context().gcs_address
    assert int(actors) == 2  # the stage's Parent and Probe, none of this test's
    # The stage's workers run at the stage's own niceness, not at Ray's default of 15 below
    # every other process of the machine.
    assert int(worker_nice) == int(stage_nice)
