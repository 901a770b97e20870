"""The typed hand-overs: TrainingJob across Ray's boundary, TuneChoice (best.json) between the
tune and train stages. A reader of best.json gives a TuneChoice or one ConfigError line, for
any bytes."""

import json
import random

import pytest

from resgan.config import ConfigError, load_config
from resgan.metrics.scoring import FidRef
from resgan.training.job import TrainingJob, TuneChoice, with_choice

CHOICE = dict(searched=["depth", "lr_g"], point={"depth": 3, "lr_g": 4e-4},
              checkpoint=".ray_results/tune-x/trial_1/checkpoint_000002", trial_epochs=2,
              fid=12.5, features="classifier", fid_samples=500, trial_id="a1b2_00001",
              trial_run_id="r1", mlflow_run_id="r0", trials=4, failed=0, stopped=2)


def test_a_choice_written_reads_back_the_same(tmp_path):
    path = tmp_path / "tune" / "best.json"  # the folder does not exist yet
    TuneChoice(**CHOICE).write(path)
    assert TuneChoice.read(path) == TuneChoice(**CHOICE)
    assert json.loads(path.read_text())["point"] == {"depth": 3, "lr_g": 4e-4}
    assert [p.name for p in path.parent.iterdir()] == ["best.json"]  # no temporary left


def test_nothing_searched_is_a_choice_with_no_point(tmp_path):
    TuneChoice(searched=[]).write(tmp_path / "best.json")
    c = TuneChoice.read(tmp_path / "best.json")
    assert (c.point, c.checkpoint, c.trial_epochs, c.trials, c.start()) == ({}, None, 0, 0, None)


@pytest.mark.parametrize("text, says", [
    ('{"depth": 2, "lr_g": 0.0002, "lr_d": 0.0002}', "not a tune choice of this version (searched: Field required)"),
    ('{"searched": [], "epochs": 3}', "(epochs: Extra inputs are not permitted)"),
    ('{"searched": [], "trial_epochs": "three"}', "(trial_epochs: Input should be a valid integer"),
    ('{"searched": ["lr_g"], "point": {"width": 3}}', "point has keys that cannot be searched (width); allowed: depth, residual, loss, lr_g, lr_d"),
    ("{not json", "(not JSON)"),
    ("[1, 2]", "(Input should be a valid dictionary"),
])
def test_a_wrong_best_json_is_refused_in_one_line(tmp_path, text, says):
    path = tmp_path / "best.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        TuneChoice.read(path)
    msg = str(e.value)
    assert says in msg and msg.startswith(str(path)) and "\n" not in msg
    assert msg.endswith("run the tune stage again (dvc repro tune)")


def test_a_missing_best_json_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"best.json: cannot read tune's choice \(No such file"):
        TuneChoice.read(tmp_path / "best.json")


def test_fuzzed_best_json_gives_a_choice_or_one_config_error(tmp_path):
    good = TuneChoice(**CHOICE).model_dump_json().encode()
    rng = random.Random(0)
    path = tmp_path / "best.json"
    outcomes = {"read": 0, "refused": 0}
    for _ in range(400):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[i] = rng.randrange(256)
            elif op < 0.7:
                del data[i:i + rng.randint(1, 8)]
            else:
                data[i:i] = bytes(rng.choice(b'{}[]",:0123456789.-eEnulltruefalse ') for _ in range(3))
        path.write_bytes(bytes(data))
        try:
            TuneChoice.read(path)
            outcomes["read"] += 1
        except ConfigError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
    assert outcomes["read"] > 0 and outcomes["refused"] > 100, outcomes


def test_start_is_the_checkpoint_to_continue(tmp_path):
    c = TuneChoice(**CHOICE)
    assert c.start(tmp_path) is None  # gone (ray.storage_path cleaned)
    (tmp_path / CHOICE["checkpoint"]).mkdir(parents=True)
    assert c.start(tmp_path) == str((tmp_path / CHOICE["checkpoint"]).resolve())
    assert TuneChoice.portable(str(tmp_path / CHOICE["checkpoint"]), tmp_path) == CHOICE["checkpoint"]
    assert TuneChoice.portable("/elsewhere/ckpt", tmp_path) == "/elsewhere/ckpt"
    uri = TuneChoice(**{**CHOICE, "checkpoint": "s3://bucket/tune/checkpoint_000002"})
    assert uri.start(tmp_path) == "s3://bucket/tune/checkpoint_000002"


def test_with_choice_sets_only_the_searched_keys(tmp_path):
    cfg = load_config({"model": {"depth": "tune"}, "train": {"lr_g": "tune"}})
    TuneChoice(**CHOICE).write(tmp_path / "best.json")
    tuned = with_choice(cfg, tmp_path / "best.json")
    assert (tuned.model.depth, tuned.train.lr_g, tuned.train.lr_d) == (3, 4e-4, cfg.train.lr_d)
    only = with_choice(cfg, tmp_path / "best.json", keys=["lr_g"])
    assert (only.model.depth, only.train.lr_g) == ("tune", 4e-4)
    fixed = load_config({})
    assert with_choice(fixed, tmp_path / "absent.json") is fixed  # nothing searched: not read
    TuneChoice(searched=["lr_g"], point={"lr_g": 1e-3}).write(tmp_path / "best.json")
    with pytest.raises(ConfigError, match=r"best.json has no value for depth: run the tune stage"):
        with_choice(cfg, tmp_path / "best.json")


def test_a_training_job_crosses_as_a_dict(tmp_path):
    data = tmp_path / "train.npz"
    ref = FidRef(stats_path="stats.npz", classifier_path="classifier.pt")
    job = TrainingJob.build(load_config({}), data_path=data, fid_ref=ref, run_id="r1",
                            from_checkpoint="s3://b/c", stop_epoch=3, threads=2)
    again = TrainingJob.from_dict(json.loads(json.dumps(job.to_dict())))
    assert again == job and again.data_path == str(data.resolve())
    assert again.cfg() == load_config({}) and again.reference() == ref.resolved()
