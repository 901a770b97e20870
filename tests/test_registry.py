"""The champion gate on a real embedded MLflow store, and `resgan sample` from it."""

import numpy as np
import pytest
import torch
from PIL import Image

from resgan.cli import main as cli
from resgan.nets import Generator
from resgan.registry import ALIAS, register, should_promote
from resgan.training import checkpoint as ckpt_io


def test_gate_rules():
    new = {"fid": 5.0, "features": "classifier", "num_samples": 1000}
    assert should_promote(new, None)[0]
    assert should_promote(new, {"fid": "6.0", "features": "classifier", "num_samples": "1000"})[0]
    assert not should_promote(new, {"fid": "5.0", "features": "classifier", "num_samples": "1000"})[0]
    assert not should_promote(new, {"fid": "4.0", "features": "classifier", "num_samples": "1000"})[0]
    ok, why = should_promote(new, {"fid": "9.0", "features": "inception", "num_samples": "1000"})
    assert not ok and "not comparable" in why
    assert not should_promote({**new, "fid": float("nan")}, None)[0]


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

    ev = lambda fid: {"fid": fid, "features": "classifier", "num_samples": 200, "fid_floor": 1.0}  # noqa: E731
    g = [_generator_file(tmp_path / f"g{i}.pt", i) for i in range(3)]
    d1 = register(g[0], run_id=_run_id("a"), model_name="m", evaluation=ev(10.0), commit="x")
    d2 = register(g[1], run_id=_run_id("b"), model_name="m", evaluation=ev(12.0), commit="x")
    c = tracking.client()
    assert d1.promoted and not d2.promoted
    assert str(c.get_model_version_by_alias("m", ALIAS).version) == d1.version == "1"
    d3 = register(g[2], run_id=_run_id("c"), model_name="m", evaluation=ev(8.0), commit="x")
    assert d3.promoted and d3.champion_fid_before == pytest.approx(10.0)
    champ = c.get_model_version_by_alias("m", ALIAS)
    assert str(champ.version) == "3"
    assert champ.tags["fid"] == "8.0" and champ.tags["features"] == "classifier"
    assert champ.tags["num_samples"] == "200" and champ.tags["git_commit"] == "x"
    assert len(c.search_model_versions("name='m'")) == 3

    # resgan sample from the registry (pt2, no pickle) equals sampling the file itself
    cli(["sample", "models:/m@champion", "-o", str(tmp_path / "a.png"), "-n", "9", "--seed", "3"])
    cli(["sample", str(g[2]), "-o", str(tmp_path / "b.png"), "-n", "9", "--seed", "3"])
    a = np.asarray(Image.open(tmp_path / "a.png"))
    b = np.asarray(Image.open(tmp_path / "b.png"))
    assert a.shape == b.shape == (32, 32, 3)  # 3x3 grid of 8px images with 2px padding
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert a.std() > 0
