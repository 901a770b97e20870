"""`resgan fid` against pytorch-fid's own CLI, on folders of PNGs the test writes."""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from resgan.cli import main as cli
from resgan.data import load_dataset


def _folder(path, images):
    path.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).resize((32, 32), Image.NEAREST).save(path / f"{i:03d}.png")
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    x, _ = load_dataset("digits", 8)
    imgs = ((x[:, 0] + 1) * 127.5).round().astype(np.uint8)
    noisy = np.clip(imgs[30:60].astype(int) + np.random.default_rng(0).integers(0, 60, imgs[30:60].shape), 0, 255)
    d = tmp_path_factory.mktemp("fid")
    return _folder(d / "a", imgs[:30]), _folder(d / "b", noisy.astype(np.uint8))


def _fid_of(text):
    return float(re.search(r"FID:\s+([0-9.eE+-]+)", text).group(1))


def test_same_fid_as_pytorch_fid(folders, inception_weights, capsys, tmp_path):
    a, b = folders
    env = {"TORCH_HOME": str(inception_weights.parents[2]), "PATH": ""}
    ref = subprocess.run([sys.executable, "-m", "pytorch_fid", "--device", "cpu", "--dims", "64",
                          "--num-workers", "0", str(a), str(b)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr
    theirs = _fid_of(ref.stdout)
    cli(["fid", str(a), str(b), "--dims", "64", "--device", "cpu",
         "--inception-weights", str(inception_weights)])
    ours = _fid_of(capsys.readouterr().out)
    assert ours == pytest.approx(theirs, rel=1e-3)
    assert ours > 0.01  # the noisy folder really differs

    # --save-stats, then the .npz in place of the folder: the same FID
    cli(["fid", str(a), str(tmp_path / "a.npz"), "--save-stats", "--dims", "64",
         "--device", "cpu", "--inception-weights", str(inception_weights)])
    cli(["fid", str(tmp_path / "a.npz"), str(b), "--dims", "64", "--device", "cpu",
         "--inception-weights", str(inception_weights)])
    assert _fid_of(capsys.readouterr().out) == pytest.approx(ours, rel=1e-6)


def test_classifier_features(folders, prepared, capsys):
    a, b = folders
    cli(["fid", str(a), str(a), "--features", "classifier", "--classifier",
         str(prepared / "classifier.pt")])
    same = _fid_of(capsys.readouterr().out)
    cli(["fid", str(a), str(b), "--features", "classifier", "--classifier",
         str(prepared / "classifier.pt")])
    differ = _fid_of(capsys.readouterr().out)
    assert same == pytest.approx(0.0, abs=1e-3) and differ > 1.0


def test_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no images"):
        (tmp_path / "empty").mkdir()
        cli(["fid", str(tmp_path / "empty"), str(tmp_path / "empty"), "--features", "classifier",
             "--classifier", "x.pt"])
    with pytest.raises(SystemExit, match="needs --classifier"):
        (tmp_path / "one").mkdir()
        Image.new("L", (8, 8)).save(tmp_path / "one" / "x.png")
        cli(["fid", str(tmp_path / "one"), str(tmp_path / "one"), "--features", "classifier"])


def test_pipeline_fid_of_quantised_samples_equals_the_cli_on_their_pngs(inception_weights,
                                                                         tmp_path):
    """A generator's samples scored in the pipeline (quantised to 8 bits before Inception)
    give the FID that pytorch-fid's CLI gives on the same samples saved as PNGs."""
    import torch

    from resgan.metrics.features import build_extractor, extract_all, quantize
    from resgan.metrics.fid import feature_stats, fid_from_features, save_stats
    from resgan.nets import Generator, sample

    torch.manual_seed(0)
    G = Generator(z_dim=16, channels=8, depth=1).eval()
    imgs = sample(G, 100, seed=0)
    ex = build_extractor("inception", inception_weights=str(inception_weights), dims=64)
    x, _ = load_dataset("digits", 8)
    ref = feature_stats(extract_all(ex, torch.from_numpy(x[:200]).split(50)))
    save_stats(tmp_path / "ref.npz", *ref)
    ours = fid_from_features(extract_all(ex, imgs.split(50)), *ref)

    pngs = tmp_path / "samples"
    pngs.mkdir()
    for i, img in enumerate(quantize(imgs)):
        Image.fromarray(img[0].numpy(), mode="L").save(pngs / f"{i:03d}.png")
    env = {"TORCH_HOME": str(inception_weights.parents[2]), "PATH": ""}
    cli_out = subprocess.run([sys.executable, "-m", "pytorch_fid", "--device", "cpu", "--dims",
                              "64", "--batch-size", "50", "--num-workers", "0", str(pngs),
                              str(tmp_path / "ref.npz")],
                             capture_output=True, text=True, env=env, timeout=600)
    assert cli_out.returncode == 0, cli_out.stderr
    print(f"pipeline {ours!r}, pytorch-fid CLI {_fid_of(cli_out.stdout)!r}")
    assert _fid_of(cli_out.stdout) == pytest.approx(ours, rel=1e-6)
    assert ours > 0.01
