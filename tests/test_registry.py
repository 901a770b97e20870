"""The champion gate on a real embedded MLflow store: fresh seeds and the paired test,
protocols, the lock, concurrent registrations, promote/rollback, and `resgan sample` from
the registry."""

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
from resgan.registry import ALIAS, GATE_SEED_BASE, PREVIOUS, fresh_seeds, register
from resgan.training import checkpoint as ckpt_io

P = {"features": "classifier", "extractor": "abc", "dims": 64, "num_samples": 200, "seed": 0,
     "repeats": 3, "reference": "ref", "code": "c0de"}


def _score(fid, **protocol):
    """A score of 3 seeds, SD 0.1 (the gate without re-scoring compares these, Welch)."""
    return {"fid": fid, "fid_std": 0.1, "fid_per_seed": [fid - 0.1, fid, fid + 0.1],
            "protocol": {**P, **protocol}}


def test_protocol_names_everything_a_fid_depends_on():
    a = Protocol(**P)
    assert a.differences(Protocol(**P)) == [] and a.id == Protocol(**P).id
    for key, value in (("dims", 2048), ("extractor", "other"), ("num_samples", 1000),
                       ("seed", 1), ("repeats", 5), ("reference", "x"), ("features", "inception"),
                       ("code", "other")):
        b = Protocol(**{**P, key: value})
        assert a.differences(b) == [key] and a.id != b.id
        # the family is the protocol but its seeds: the gate's history is kept per family
        assert (a.family == b.family) == (key in ("seed", "repeats"))
    assert Protocol.from_tags(a.tags()) == a
    assert Protocol.from_tags({"fid": "1"}) is None  # a version registered before protocols


def _other_quantize(x):  # a change of the scoring code path: rounds down instead of half up
    return (x.float() * 127.5 + 127.5).clamp(0, 255).to(torch.uint8)


def _other_sample(G, n, *, seed, device="cpu", batch_size=500):  # another way to sample
    return torch.zeros(n, 1, 8, 8)


def test_a_change_of_scoring_code_changes_the_protocol(prepared_layout, monkeypatch):
    """Quantisation, sampling, the extractors' forward pass: a change to any of them changes
    the protocol id (so the gate never compares scores across it) and the key of the cached
    real statistics (so prepare recomputes them)."""
    import resgan.metrics.features as features
    import resgan.nets.models as models
    from resgan.metrics.cache import extractor_key

    def protocol_and_key():
        p = Scorer(prepared_layout, features="classifier", num_samples=100, seed=0).protocol
        return p, extractor_key("classifier",
                                classifier_path=prepared_layout / "features" / "classifier.pt")

    before, key = protocol_and_key()
    for module, name, other in ((features, "quantize", _other_quantize),
                                (models, "sample", _other_sample)):
        with monkeypatch.context() as m:
            m.setattr(module, name, other)
            after, key_after = protocol_and_key()
        assert after.differences(before) == ["code"] and after.id != before.id
        assert key_after["code"] != key["code"] and key_after["weights"] == key["weights"]
    assert protocol_and_key()[0] == before  # the code back as it was: the same protocol


def test_fresh_seeds_skip_used_and_evaluated_ones():
    b = GATE_SEED_BASE
    assert fresh_seeds(set(), 3, [range(0, 10)]) == range(b, b + 3)
    assert fresh_seeds({b, b + 1, b + 2}, 3, []) == range(b + 3, b + 6)
    assert fresh_seeds(set(), 3, [range(b + 1, b + 5)]) == range(b + 5, b + 8)


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
    d3 = register(g[2], run_id=_run_id("c"), score=_score(9.7), **kw)  # better by < 0.5
    assert not d3.promoted and "null: improvement <= 0.5" in d3.reason
    assert d3.comparison.test == "Welch's t-test" and d3.comparison.p_value > 0.5
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
    assert [m.name for m in c.search_registered_models()] == ["m", "m--promotion-lock"]
    assert c.search_model_versions("name='m--promotion-lock'") == []  # every ticket released

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


def test_without_rescoring_other_protocols_are_never_compared(mlflow_store, tmp_path):
    g = [_generator_file(tmp_path / f"g{i}.pt", i) for i in range(3)]
    assert register(g[0], run_id=_run_id("a"), model_name="m", score=_score(10.0),
                    commit="x").promoted
    d = register(g[1], run_id=_run_id("b"), model_name="m", commit="x",
                 score=_score(0.001, num_samples=300))
    assert not d.promoted and "not comparable" in d.reason and "num_samples" in d.reason
    one_seed = {**_score(0.001), "fid_per_seed": [0.001]}
    d = register(g[2], run_id=_run_id("c"), model_name="m", commit="x", score=one_seed)
    assert not d.promoted and "at least 2 per-seed FIDs" in d.reason


def test_gate_scores_both_models_on_fresh_seeds(mlflow_store, tmp_path, prepared_layout):
    """The pipeline's gate: the champion and the candidate scored on the same fresh seeds
    (never the seeds the champion was scored on before), a paired test; an equal model
    re-registered is not promoted, a clearly better one is, a worse one is not, and the
    champion's per-seed history grows."""
    from resgan import tracking

    scorer = Scorer(prepared_layout, features="classifier", num_samples=100, seed=0, repeats=5)
    files = [_generator_file(tmp_path / f"g{i}.pt", i) for i in range(4)]
    gens = [ckpt_io.generator_from(ckpt_io.load(f)) for f in files]
    scores = [scorer.score(G, fid_only=True) for G in gens]
    worse, *_, better = sorted(range(4), key=lambda i: -scores[i].fid)
    gap = scores[worse].fid - scores[better].fid
    assert gap > 4 * max(scores[i].fid_std for i in (worse, better))  # untrained G: far apart

    calls = []

    def rescore(G, seeds):
        calls.append(seeds)
        return list(scorer.with_seeds(seeds).score(G, fid_only=True).per_seed)

    def reg(i, name):
        return register(files[i], run_id=_run_id(name), model_name="m", commit="x",
                        score=scores[i].as_dict(), rescore=rescore)

    b = GATE_SEED_BASE
    assert reg(worse, "first").promoted and not calls  # no champion: nothing to compare
    again = reg(worse, "again")  # the same generator registered again: an equal model
    assert not again.promoted and again.champion_rescored and again.seeds == f"{b}-{b + 4}"
    assert calls == [range(b, b + 5)] * 2  # champion and candidate, the same fresh seeds
    cmp = again.comparison
    assert cmp.test == "paired t-test" and cmp.improvement == 0.0 and cmp.p_value == 1.0
    on_fresh = scorer.with_seeds(range(b, b + 5)).score(gens[worse], fid_only=True)
    assert cmp.champion_fid == pytest.approx(on_fresh.fid, rel=1e-12)
    assert cmp.champion_sd == pytest.approx(on_fresh.fid_std, rel=1e-9)

    up = reg(better, "better")
    assert up.promoted and up.seeds == f"{b + 5}-{b + 9}"  # fresh again for the champion
    assert up.margin == pytest.approx(gap, rel=0.5) and up.comparison.p_value < 0.05
    assert up.champion_history["seeds"] == 10  # both challenges of version 1
    c = tracking.client()
    v1 = c.get_model_version("m", "1")
    family = scores[worse].protocol.family
    hist = json.loads(v1.tags[f"gate.scores.{family}"])
    assert sorted(map(int, hist)) == list(range(b, b + 10))
    assert hist[str(b)] == pytest.approx(on_fresh.per_seed[0], rel=1e-12)
    v3 = c.get_model_version("m", up.version)
    assert v3.tags["decision.test"] == "paired t-test" and float(v3.tags["decision.p_value"]) < 0.05
    assert v3.description.startswith("Promoted to @champion by the gate: better: improvement")
    assert json.loads(v3.tags["fid_per_seed"]) == pytest.approx(list(scores[better].per_seed))
    assert str(c.get_model_version_by_alias("m", ALIAS).version) == up.version

    down = reg(worse, "worse")  # the new champion was selected on b+5..b+9: fresh are b+10..
    assert not down.promoted and down.margin < 0 and down.seeds == f"{b + 10}-{b + 14}"
    assert str(c.get_model_version_by_alias("m", ALIAS).version) == up.version
    decision = down.as_dict()
    json.dumps(decision)  # decision.json
    assert decision["comparison"]["p_value"] > 0.95 and decision["alpha"] == 0.05


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
    score = {"fid": fid, "fid_std": 0.1, "fid_per_seed": [fid - 0.1, fid, fid + 0.1],
             "protocol": %r}
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
