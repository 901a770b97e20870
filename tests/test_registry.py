"""The champion gate on a real embedded MLflow store: protocols, the noise margin, the lock,
concurrent registrations, promote/rollback, and `resgan sample` from the registry."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from resgan.cli import main as cli
from resgan.metrics.scoring import Protocol, Scorer
from resgan.nets import Generator
from resgan.registry import ALIAS, PREVIOUS, register, should_promote
from resgan.training import checkpoint as ckpt_io

P = {"features": "classifier", "extractor": "abc", "dims": 64, "num_samples": 200, "seed": 0,
     "repeats": 1, "reference": "ref"}


def _score(fid, **protocol):
    return {"fid": fid, "fid_std": 0.1, "protocol": {**P, **protocol}}


def test_gate_rules():
    assert should_promote(5.0, None, 0.5)[0]
    assert should_promote(5.0, 6.0, 0.5)[0]
    assert not should_promote(5.0, 5.4, 0.5)[0]  # better, but within the noise margin
    assert not should_promote(5.0, 5.5, 0.5)[0]  # exactly the margin: not more than it
    assert should_promote(5.0, 5.5, 0.0)[0]
    assert not should_promote(5.0, 5.0, 0.0)[0]
    assert not should_promote(5.0, 4.0, 0.0)[0]
    assert not should_promote(float("nan"), None, 0.0)[0]


def test_protocol_names_everything_a_fid_depends_on():
    a = Protocol(**P)
    assert a.differences(Protocol(**P)) == [] and a.id == Protocol(**P).id
    for key, value in (("dims", 2048), ("extractor", "other"), ("num_samples", 1000),
                       ("seed", 1), ("repeats", 5), ("reference", "x"), ("features", "inception")):
        b = Protocol(**{**P, key: value})
        assert a.differences(b) == [key] and a.id != b.id
    assert Protocol.from_tags(a.tags()) == a
    assert Protocol.from_tags({"fid": "1"}) is None  # a version registered before protocols


def _generator_file(path, seed):
    torch.manual_seed(seed)
    G = Generator(z_dim=16, channels=8, depth=1)
    ckpt_io.export_generator({"G_kwargs": G.kwargs, "G_ema": G.state_dict(), "epoch": 1,
                              "config": {}}, path)
    return path


def _run_id(name):
    from resgan import tracking

    return tracking.start_run("test", name)


def test_worse_model_never_takes_champion(mlflow_store, tmp_path):
    from resgan import tracking

    g = [_generator_file(tmp_path / f"g{i}.pt", i) for i in range(4)]
    kw = dict(model_name="m", commit="x", min_improvement=0.5)
    d1 = register(g[0], run_id=_run_id("a"), score=_score(10.0), **kw)
    d2 = register(g[1], run_id=_run_id("b"), score=_score(12.0), **kw)
    c = tracking.client()
    assert d1.promoted and not d2.promoted and d2.margin == pytest.approx(-2.0)
    assert str(c.get_model_version_by_alias("m", ALIAS).version) == d1.version == "1"
    d3 = register(g[2], run_id=_run_id("c"), score=_score(9.7), **kw)  # within the noise
    assert not d3.promoted and "min_improvement" in d3.reason
    d4 = register(g[3], run_id=_run_id("d"), score=_score(8.0), **kw)
    assert d4.promoted and d4.champion_fid_before == pytest.approx(10.0)
    assert d4.margin == pytest.approx(2.0) and not d4.champion_rescored
    champ = c.get_model_version_by_alias("m", ALIAS)
    assert str(champ.version) == "4"
    assert str(c.get_model_version_by_alias("m", PREVIOUS).version) == "1"
    assert champ.tags["fid"] == "8.0" and champ.tags["features"] == "classifier"
    assert champ.tags["num_samples"] == "200" and champ.tags["git_commit"] == "x"
    assert champ.tags["protocol.id"] == Protocol(**P).id and champ.tags["decision"] == "promoted"
    assert float(champ.tags["decision.margin"]) == pytest.approx(2.0)
    assert c.get_model_version("m", "3").tags["decision"] == "declined"
    assert len(c.search_model_versions("name='m'")) == 4
    assert [m.name for m in c.search_registered_models()] == ["m"]  # the lock is gone

    # resgan sample from the registry (pt2, no pickle) equals sampling the file itself
    cli(["sample", "models:/m@champion", "-o", str(tmp_path / "a.png"), "-n", "9", "--seed", "3"])
    cli(["sample", str(g[3]), "-o", str(tmp_path / "b.png"), "-n", "9", "--seed", "3"])
    a = np.asarray(Image.open(tmp_path / "a.png"))
    b = np.asarray(Image.open(tmp_path / "b.png"))
    assert a.shape == b.shape == (32, 32, 3)  # 3x3 grid of 8px images with 2px padding
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert a.std() > 0


@pytest.fixture(scope="module")
def prepared_layout(prepared, tmp_path_factory):
    """The conftest split and classifier in prepare's layout (features/, index.json)."""
    d = tmp_path_factory.mktemp("prep")
    (d / "features").mkdir()
    shutil.copy(prepared / "classifier.pt", d / "features" / "classifier.pt")
    shutil.copy(prepared / "stats.npz", d / "features" / "train-stats.npz")
    shutil.copy(prepared / "stats.features.npy", d / "features" / "train-stats.features.npy")
    (d / "features" / "index.json").write_text(json.dumps(
        {"classifier": {"train": "train-stats.npz", "test": "train-stats.npz"}}))
    return d


def test_gate_rescores_a_champion_scored_under_another_protocol(mlflow_store, tmp_path,
                                                                prepared_layout):
    """The champion was scored at 100 samples and one seed; the candidate at 300 samples and
    two seeds: the gate scores the champion again under the candidate's protocol."""
    from resgan import tracking

    g1, g2 = _generator_file(tmp_path / "g1.pt", 1), _generator_file(tmp_path / "g2.pt", 2)
    G1 = ckpt_io.generator_from(ckpt_io.load(g1))
    old = Scorer(prepared_layout, features="classifier", num_samples=100, seed=0, repeats=1)
    new = Scorer(prepared_layout, features="classifier", num_samples=300, seed=5, repeats=2)
    s1 = old.score(G1).as_dict()
    d1 = register(g1, run_id=_run_id("a"), model_name="m", score=s1, commit="x")
    assert d1.promoted

    # without a way to re-score, scores under other protocols are never compared
    s2 = _score(0.001, **{**s1["protocol"], "num_samples": 300})
    d = register(g2, run_id=_run_id("b"), model_name="m", score=s2, commit="x")
    assert not d.promoted and "not comparable" in d.reason and "num_samples" in d.reason

    expected = new.score(G1)  # the champion under the new protocol, computed here directly
    assert expected.fid != pytest.approx(s1["fid"], abs=1e-6)
    assert len(expected.per_seed) == 2 and expected.fid_std > 0
    cand = {**expected.as_dict(), "fid": expected.fid - 1.0}  # a candidate clearly better
    d3 = register(g2, run_id=_run_id("c"), model_name="m", score=cand, commit="x",
                  min_improvement=0.5, rescore=lambda G: new.score(G).as_dict())
    assert d3.champion_rescored and d3.promoted
    assert d3.champion_fid_before == pytest.approx(s1["fid"])
    assert d3.champion_fid_compared == pytest.approx(expected.fid, rel=1e-9)
    assert d3.margin == pytest.approx(1.0)
    c = tracking.client()
    v1 = c.get_model_version("m", d1.version)  # both scores recorded on the versions
    assert float(v1.tags[f"rescored.{expected.protocol.id}.fid"]) == pytest.approx(expected.fid)
    assert float(c.get_model_version("m", d3.version).tags["decision.champion_fid"]) == \
        pytest.approx(expected.fid)


_CONCURRENT = textwrap.dedent("""
    import sys, time, json
    import resgan.registry as reg
    path, run_id, fid, pause, go = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    real = reg._alias_version
    def slow(c, name, alias):  # widen the read-decide-write window of the gate
        v = real(c, name, alias)
        if alias == reg.ALIAS:
            time.sleep(pause)
        return v
    reg._alias_version = slow
    score = {"fid": fid, "fid_std": 0.1, "protocol": %r}
    reg.log_generator = lambda p, r: "runs:/" + r + "/generator"  # skip the slow pt2 export
    while time.time() < go:
        time.sleep(0.01)
    d = reg.register(path, run_id=run_id, model_name="m", score=score, commit="x",
                     min_improvement=0.5, lock_timeout_s=240)
    print(json.dumps(d.as_dict()))
""" % P)


def test_two_concurrent_registrations_leave_the_better_champion(mlflow_store, tmp_path):
    """Both candidates beat the champion (10). The worse one (9) reads the champion first and
    writes last: without the promotion lock it would end up champion."""
    import os
    import time

    from resgan import tracking

    g = [_generator_file(tmp_path / f"g{i}.pt", i) for i in range(3)]
    register(g[0], run_id=_run_id("champ"), model_name="m", score=_score(10.0), commit="x")
    script = tmp_path / "reg.py"
    script.write_text(_CONCURRENT)
    go = time.time() + 15  # both processes have imported MLflow by then (on a busy machine too)
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, str(script), str(g[i]), _run_id(f"r{i}"), fid,
                               pause, str(go)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for i, fid, pause in ((1, "9.0", "4.0"), (2, "8.0", "0.5"))]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    d_worse, d_better = (json.loads(o.strip().splitlines()[-1]) for o, _ in outs)
    c = tracking.client()
    champ = c.get_model_version_by_alias("m", ALIAS)
    assert str(champ.version) == d_better["version"] and champ.tags["fid"] == "8.0"
    # one of them saw the other's result: the two decisions are serialised
    assert {d_worse["champion_version_before"], d_better["champion_version_before"]} in (
        {"1", d_worse["version"]}, {"1", d_better["version"]})


def test_promote_and_rollback_by_hand(mlflow_store, tmp_path, capsys):
    from resgan import tracking

    g = [_generator_file(tmp_path / f"g{i}.pt", i) for i in range(3)]
    for i, fid in enumerate((10.0, 8.0, 12.0)):
        register(g[i], run_id=_run_id(f"r{i}"), model_name="m", score=_score(fid), commit="x",
                 min_improvement=0.5)
    c = tracking.client()
    alias = lambda a: str(c.get_model_version_by_alias("m", a).version)  # noqa: E731
    assert (alias(ALIAS), alias(PREVIOUS)) == ("2", "1")

    cli(["promote", "m", "3", "--reason", "looks sharper"])
    assert (alias(ALIAS), alias(PREVIOUS)) == ("3", "2")
    v3 = c.get_model_version("m", "3")
    assert v3.tags["decision.kind"] == "manual" and "looks sharper" in v3.tags["promotion"]
    assert "champion is now version 3" in capsys.readouterr().out

    cli(["rollback", "m"])
    assert (alias(ALIAS), alias(PREVIOUS)) == ("2", "3")
    assert c.get_model_version("m", "3").tags["decision"] == "rolled back"
    cli(["rollback", "m"])  # a second rollback undoes the first
    assert (alias(ALIAS), alias(PREVIOUS)) == ("3", "2")

    for argv, message in ((["promote", "nosuch", "1"], "no registered model 'nosuch'"),
                          (["promote", "m", "7"], "model 'm' has no version 7 (versions: 1, 2, 3)"),
                          (["rollback", "nosuch"], "no registered model 'nosuch'")):
        with pytest.raises(SystemExit) as exc:
            cli(argv)
        assert message in str(exc.value)
    assert (alias(ALIAS), alias(PREVIOUS)) == ("3", "2")  # errors changed nothing


def test_rollback_without_previous_champion_is_a_clear_error(mlflow_store, tmp_path):
    register(_generator_file(tmp_path / "g.pt", 0), run_id=_run_id("a"), model_name="m",
             score=_score(10.0), commit="x")
    with pytest.raises(SystemExit) as exc:
        cli(["rollback", "m"])
    assert "has no 'previous-champion' alias" in str(exc.value)


def test_cli_help_lists_the_registry_actions():
    out = subprocess.run([sys.executable, "-m", "resgan.cli", "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60).stdout
    assert "promote" in out and "rollback" in out and "sample" in out
