"""Tracking helpers on a real embedded MLflow store: a run's training dataset as a dataset
input; the run a restored Tune trial continues."""

import json

import numpy as np

from resgan import tracking
from resgan.data import save_split
from resgan.metrics.cache import fingerprint


def test_log_dataset_reads_back(mlflow_store, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(20, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "prepare" / "train.npz"
    save_split(path, x, np.arange(20) % 10)
    run_id = tracking.start_run("test", "train")

    digest = tracking.log_dataset(run_id, path, "digits-r8-train")
    # the same images written again (new zip timestamps): the same digest
    save_split(path, x, np.arange(20) % 10)
    assert tracking.log_dataset(run_id, path, "digits-r8-train") == digest == fingerprint(x)

    inputs = tracking.client().get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1  # logging it again (a resumed stage) adds nothing
    ds = inputs[0].dataset
    assert ds.name == "digits-r8-train" and ds.digest == digest
    assert {t.key: t.value for t in inputs[0].tags} == {"mlflow.data.context": "training"}
    assert ds.source_type == "local"
    assert json.loads(ds.source)["uri"] == str(path.resolve())
    assert json.loads(ds.profile)["features_shape"] == [20, 1, 8, 8]

    # other images: another digest
    save_split(path, x[:10], np.arange(10))
    assert tracking.log_dataset(run_id, path, "digits-r8-train", context="eval") != digest
    assert len(tracking.client().get_run(run_id).inputs.dataset_inputs) == 2


def test_a_restored_trial_finds_the_run_it_started(mlflow_store):
    parent = tracking.start_run("test", "tune")
    other_parent = tracking.start_run("test", "tune")
    assert tracking.find_run("test", parent, "resgan.trial_id", "t_00001") is None
    first = tracking.start_run("test", "trial-t_00001", parent_run_id=parent,
                               tags={"resgan.trial_id": "t_00001"})
    tracking.start_run("test", "trial-t_00002", parent_run_id=parent,
                       tags={"resgan.trial_id": "t_00002"})
    tracking.start_run("test", "trial-t_00001", parent_run_id=other_parent,
                       tags={"resgan.trial_id": "t_00001"})  # another search's trial
    assert tracking.find_run("test", parent, "resgan.trial_id", "t_00001") == first
    assert tracking.find_run("test", parent, "resgan.trial_id", "t_00003") is None
