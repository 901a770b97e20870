"""A run's training dataset as an MLflow dataset input, on a real embedded store."""

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
