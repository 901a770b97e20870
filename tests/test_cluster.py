"""A two-node Ray cluster on one machine (ray.cluster_utils.Cluster): Train and Tune span it."""

import os
import subprocess
import sys

import pytest
import ray

from resgan import tracking
from resgan.config import replace
from resgan.training import checkpoint as ckpt_io
from resgan.metrics.scoring import FidRef

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    from resgan.runtime.cluster import init_ray

    c = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    # Join as a stage does (init_ray with RAY_ADDRESS): every process of the job then has
    # this cluster's address, so nothing auto-detects among other Ray instances on the machine.
    old = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = c.address
    init_ray()
    yield c
    ray.shutdown()
    c.shutdown()
    if old is None:
        os.environ.pop("RAY_ADDRESS", None)
    else:
        os.environ["RAY_ADDRESS"] = old


def _ref(prepared):
    return FidRef(str(prepared / "stats.npz"), "classifier", str(prepared / "classifier.pt"))


def _train_workers(class_name: str = "RayTrainWorker", at_least: int = 0) -> dict[str, str]:
    """actor id -> node id of every actor of that class so far (dead ones included): Ray
    Train workers, or Tune's function trainables (``ImplicitFunc``). A class is matched by
    its last name: when `make test` collects every test file, Ray lists Tune's trainables
    by their qualified name, ``wrap_function.<locals>.ImplicitFunc`` (alone, by the short
    one). Fails naming every actor listed when fewer than ``at_least`` match."""
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address, limit=1000, detail=True)
    found = {a.actor_id: a.node_id for a in actors if a.class_name.split(".")[-1] == class_name}
    assert len(found) >= at_least, (class_name, sorted((a.class_name, a.state) for a in actors))
    return found


def test_two_nodes(cluster):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert ray.cluster_resources()["CPU"] == 2


def test_stage_joins_the_cluster_at_RAY_ADDRESS(cluster):
    """init_ray (what every stage calls) connects to RAY_ADDRESS instead of starting Ray."""
    code = ("import ray; from resgan.runtime.cluster import init_ray; init_ray(); "
            "print(len([n for n in ray.nodes() if n['Alive']]), ray.cluster_resources()['CPU'])")
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["2", "2.0"]


def test_train_and_tune_span_both_nodes(cluster, tiny_cfg, prepared, mlflow_store, tmp_path):
    from resgan.training.ray_train import make_trainer
    from resgan.tuning import run_search

    trainer = make_trainer(tiny_cfg, data_path=str(prepared / "train.npz"), fid_ref=_ref(prepared),
                           name="cluster-train", storage=str(tmp_path / "ray"), num_workers=2,
                           use_gpu=False)
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        assert ckpt_io.load(d)["epoch"] == 2
    train_workers = _train_workers(at_least=2)
    assert len(set(train_workers.values())) == 2  # one worker per node: each has one CPU

    parent = tracking.start_run("test", "tune")
    cfg = replace(tiny_cfg, tracking={"experiment": "test"}, ray={"storage_path": str(tmp_path / "ray")},
                  model={"depth": "tune"})
    rows = run_search(cfg, data_path=str(prepared / "train.npz"), fid_ref=_ref(prepared),
                      use_gpu=False, parent_run_id=parent, name="cluster-tune")
    assert len(rows) == 2 and all(r.status in ("finished", "stopped") for r in rows)
    # one-worker trials train in their own Tune actor, with a whole CPU each: both trials
    # at once, one on each node
    trials = _train_workers("ImplicitFunc", at_least=2)
    assert len(trials) == 2 and len(set(trials.values())) == 2
    assert _train_workers().keys() == train_workers.keys()  # no Ray Train worker group
