"""The on-disk datasets, from tiny files written here in each real format.

IDX (MNIST, Fashion-MNIST), CIFAR-10's pickled python batches, and folders of PNG/JPEG
images of mixed sizes. Pixel values are chosen so that the loaded images can be checked
against hand computation; one training step runs on every loader's output.
"""

from __future__ import annotations

import codecs
import collections
import os
import pickle
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from resgan.config import load_config
from resgan.data import DataError, is_labelled, load_dataset, save_split, split


def write_idx(path, array: np.ndarray) -> None:
    """The IDX format: magic (0, 0, type 0x08 = ubyte, ndim), big-endian int32 dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def _mnist_files(root, folder: str, n_train: int = 12, n_test: int = 6,
                 noise: bool = False) -> None:
    raw = root / folder / "raw"
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 3
        images = np.zeros((n, 28, 28), np.uint8)
        images[:] = (labels * 100 + 20)[:, None, None]  # constant images: 20, 120, 220
        if noise:
            images += rng.integers(0, 30, size=images.shape, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_datasets(tmp_path, name, folder):
    _mnist_files(tmp_path, folder)
    x, y = load_dataset(name, 16, root=tmp_path, download=False)
    assert x.shape == (18, 1, 16, 16) and x.dtype == np.float32
    assert y.tolist() == [i % 3 for i in range(12)] + [i % 3 for i in range(6)]
    expected = (y * 100 + 20) / 255 * 2 - 1  # a constant image stays constant when resized
    np.testing.assert_allclose(x.reshape(18, -1), np.repeat(expected[:, None], 256, 1), atol=1e-5)


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(DataError, match=r"MNIST/raw .*put train-images-idx3-ubyte"):
        load_dataset("mnist", 8, root=tmp_path, download=False)
    with pytest.raises(DataError, match=r"data_batch_1.*not found under .*cifar-10-batches-py"):
        load_dataset("cifar10", 8, root=tmp_path, download=False)
    with pytest.raises(DataError, match="no images"):
        load_dataset("folder", 8, root=tmp_path, download=False)


def _cifar_files(root, per_batch: int = 4) -> None:
    """CIFAR-10's python batches: pickled dicts with row-major 3 x 32 x 32 uint8 rows."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        labels = [(b * per_batch + i) % 10 for i in range(per_batch)]
        data = np.zeros((per_batch, 3, 32, 32), np.uint8)
        data[:, 0] = 255  # red channel full, green = 10 x label, blue zero
        data[:, 1] = (np.array(labels) * 10)[:, None, None]
        batch = {"batch_label": name, "labels": labels, "data": data.reshape(per_batch, -1),
                 "filenames": [f"{name}-{i}.png" for i in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)


def test_cifar10_batches(tmp_path):
    _cifar_files(tmp_path)
    x, y = load_dataset("cifar10", 32, root=tmp_path, download=False)
    assert x.shape == (24, 3, 32, 32)
    assert y.tolist() == [i % 10 for i in range(24)]
    np.testing.assert_allclose(x[:, 0], 1.0)  # 255 -> +1
    np.testing.assert_allclose(x[:, 1, 0, 0], y * 10 / 255 * 2 - 1, atol=1e-6)
    np.testing.assert_allclose(x[:, 2], -1.0)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_batch_that_runs_code_is_refused(tmp_path):
    _cifar_files(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_3 is not a CIFAR-10 python batch "
                                        r"\(pickle names (posix|os)\.system, a global"):
        load_dataset("cifar10", 32, root=tmp_path, download=False)


def _py2_batch(raw: bytes, shape=(2, 3072), labels=(1, 2)) -> bytes:
    """A batch as CIFAR-10's own files are: pickled by Python 2 (byte strings, numpy.core)."""
    def short(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    dims = b"".join(b"K" + bytes([n]) if n < 256 else b"M" + n.to_bytes(2, "little") for n in shape)
    return (b"\x80\x02}q\x01(" + short(b"data") + b"cnumpy.core.multiarray\n_reconstruct\nq\x02"
            b"cnumpy\nndarray\nq\x03K\x00\x85" + short(b"b") + b"\x87Rq\x04(K\x01" + dims + b"\x86"
            b"cnumpy\ndtype\nq\x05" + short(b"u1") + b"K\x00K\x01\x87Rq\x06(K\x03" + short(b"|") +
            b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T" + len(raw).to_bytes(4, "little") + raw +
            b"tb" + short(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"eu.")


def test_cifar_batch_in_the_original_python2_format(tmp_path):
    from resgan.data import _read_cifar_batch

    raw = bytes(range(256)) * 24  # 6,144 bytes = 2 x 3072
    (tmp_path / "b").write_bytes(_py2_batch(raw))
    data, labels = _read_cifar_batch(tmp_path / "b")
    assert data.dtype == np.uint8 and data.shape == (2, 3072)
    assert data.tobytes() == raw and labels.tolist() == [1, 2]


def _uint8_batch(**extra) -> bytes:
    return pickle.dumps({"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072),
                         "labels": [0, 1], **extra}, protocol=2)


class _Reducing:
    """Pickles as the call ``fn(*args)``."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("crafted, why", [
    # the dtype's state turned into an object dtype: raw bytes would be read as pointers
    (lambda: _uint8_batch().replace(b"X\x02\x00\x00\x00u1", b"X\x02\x00\x00\x00O8"),
     "dtype is not plain uint8"),
    (lambda: pickle.dumps({"data": np.zeros((2, 3072), dtype=[("x", "O"), ("y", "u1")])[:, :1],
                           "labels": [0, 1]}, protocol=2), "dtype is not plain uint8"),
    (lambda: pickle.dumps({"data": np.empty((2, 3072), dtype=object), "labels": [0, 1]}, protocol=2),
     "dtype is not plain uint8"),
    # nested calls: a dtype built from a dtype, raw data from a call of a call, any other name
    (lambda: pickle.dumps({"data": _Reducing(np.dtype, np.dtype("u1"), False, True),
                           "labels": [0]}, protocol=2), "not a numpy array"),
    (lambda: pickle.dumps({"data": _Reducing(codecs.encode, _Evil(), "latin1"), "labels": [0]},
                          protocol=2), r"pickle names (posix|os)\.system"),
    (lambda: pickle.dumps({"data": _Reducing(np.frombuffer, b"\x00" * 8, "O"), "labels": [0]},
                          protocol=2), "pickle names numpy"),
    (lambda: pickle.dumps(collections.OrderedDict(data=1), protocol=4), "pickle names collections"),
    # opcodes and stack shapes a batch never has
    (lambda: b"\x80\x02}}b.", "BUILD of something that is not a fresh array"),
    (lambda: b"\x80\x02\x82\x01.", "opcode EXT1"),
    (lambda: b"\x80\x02(}.", "unbalanced stack"),
    (lambda: _uint8_batch()[:-40], "not a pickle"),
    # the right names, the wrong content
    (lambda: _py2_batch(b"\x00" * 100), "100 bytes for a shape of"),
    (lambda: _py2_batch(b"\x00" * 3072 * 2, labels=(1, 12)), "labels: not a list of ints 0-9"),
    (lambda: _py2_batch(b"\x00" * 3072, shape=(1, 3072), labels=(1,)).replace(b"U\x06labels", b"U\x06lables"),
     "not data and labels"),
    (lambda: _py2_batch(b"\x00" * 32, shape=(2, 16)), r"shape \(2, 16\), not N x 3072"),
])
def test_crafted_cifar_batches_are_refused_before_any_element_is_read(tmp_path, crafted, why):
    from resgan.data import _read_cifar_batch

    path = tmp_path / "data_batch_1"
    path.write_bytes(crafted())
    with pytest.raises(DataError) as err:
        _read_cifar_batch(path)
    msg = str(err.value)
    assert msg.startswith(f"cifar10: {path} is not a CIFAR-10 python batch"), msg
    assert re.search(why, msg), msg
    assert "\n" not in msg


def _png(path, size, rgb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def test_folder_with_class_subfolders_is_labelled(tmp_path):
    _png(tmp_path / "cats" / "a.png", (40, 30), (255, 0, 0))
    _png(tmp_path / "cats" / "b.PNG", (9, 9), (255, 0, 0))
    _png(tmp_path / "dogs" / "c.png", (64, 64), (0, 0, 255))
    Image.new("L", (20, 50), 255).save(tmp_path / "dogs" / "d.jpg")  # greyscale JPEG -> RGB
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    x, y = load_dataset("folder", 8, root=tmp_path)
    assert x.shape == (4, 3, 8, 8) and y.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(x[0, :, 4, 4], [1, -1, -1], atol=1e-5)  # red
    np.testing.assert_allclose(x[2, :, 4, 4], [-1, -1, 1], atol=1e-5)  # blue
    np.testing.assert_allclose(x[3], 1.0, atol=0.02)  # white JPEG (lossy)
    assert is_labelled(y)


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(5):
        _png(tmp_path / f"{i}.png", (12 + i, 12), (50 * i, 0, 0))
    x, y = load_dataset("folder", 16, root=tmp_path)
    assert x.shape == (5, 3, 16, 16) and (y == -1).all() and not is_labelled(y)
    x_tr, y_tr, x_te, y_te = split(x, y, 0.4, seed=0)  # unstratified without labels
    assert len(x_tr) == 3 and len(x_te) == 2


def _one_step(tmp_path, x, y, resolution):
    """One training epoch of the Ray-free loop on the loaded images (one G and D step)."""
    from resgan.training.loop import fit

    x_tr, y_tr, _, _ = split(x, y, 0.5, seed=0)
    save_split(tmp_path / "train.npz", x_tr, y_tr)
    cfg = load_config({"data": {"resolution": resolution},
                       "model": {"depth": 1, "channels": 8, "z_dim": 8},
                       "train": {"epochs": 1, "batch_size": len(x_tr), "num_workers": 1}})
    reports = []
    state = fit(cfg, data_path=str(tmp_path / "train.npz"),
                report=lambda m, s: reports.append(m))
    assert state["epoch"] == 1 and state["step"] == 1
    assert np.isfinite(reports[0]["loss_d"]) and np.isfinite(reports[0]["loss_g"])
    assert state["G_kwargs"]["img_channels"] == x.shape[1]


@pytest.mark.parametrize("kind", ["mnist", "cifar10", "folder"])
def test_one_training_step_on_each_format(tmp_path, kind):
    data = tmp_path / "data"
    if kind == "mnist":
        _mnist_files(data, "MNIST")
    elif kind == "cifar10":
        _cifar_files(data)
    else:
        for i in range(8):
            _png(data / f"{i}.png", (20, 20), (30 * i, 255 - 30 * i, 0))
    x, y = load_dataset(kind, 8, root=data, download=False)
    _one_step(tmp_path, x, y, 8)


def test_classifier_trains_on_a_labelled_set(tmp_path):
    """Two separable classes from IDX files: the classifier extractor learns them."""
    from resgan.metrics.classifier import train_classifier

    _mnist_files(tmp_path, "MNIST", n_train=30, n_test=15)
    x, y = load_dataset("mnist", 8, root=tmp_path, download=False)
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a) for a in split(x, y, 0.3, seed=0))
    net, acc = train_classifier(x_tr, y_tr, x_te, y_te, epochs=30, seed=0)
    assert acc == 1.0 and net.kwargs["n_classes"] == 3



def _prepare(workdir, params: dict):
    """Run the real prepare stage script in ``workdir`` with ``params`` as params.yaml."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    (workdir / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    return subprocess.run([sys.executable, str(ROOT / "pipeline" / "prepare.py")],
                          cwd=workdir, capture_output=True, text=True, timeout=300)


def test_prepare_caches_statistics_by_extractor(tmp_path, inception_weights):
    """Changing the classifier re-computes its statistics and reuses Inception's."""
    import json

    _mnist_files(tmp_path / "data", "MNIST", n_train=150, n_test=100, noise=True)
    params = {"data": {"dataset": "mnist", "root": "data", "resolution": 8, "download": False},
              "eval": {"features": "inception", "inception_weights": str(inception_weights),
                       "inception_dims": 64, "classifier_epochs": 2}}
    first = _prepare(tmp_path, params)
    assert first.returncode == 0, first.stderr
    feats = tmp_path / "outputs" / "prepare" / "features"
    index1 = json.loads((feats / "index.json").read_text())
    assert set(index1) == {"classifier", "inception"} and index1["inception"]["dims"] == 64
    log = tmp_path / "outputs" / "logs" / "prepare.log"  # the stage's details (its console)
    assert "reused" not in log.read_text() and "computed" in log.read_text()
    params["eval"]["classifier_epochs"] = 3
    second = _prepare(tmp_path, params)
    assert second.returncode == 0, second.stderr
    index2 = json.loads((feats / "index.json").read_text())
    assert index2["inception"] == index1["inception"]  # same data, same weights: same file
    assert index2["classifier"]["train"] != index1["classifier"]["train"]
    assert log.read_text().count("reused") == 2 and log.read_text().count("computed") == 2
    assert index2["inception"]["train"].startswith("mnist-r8-train-inception64-")


def test_prepare_unlabelled_folder(tmp_path, inception_weights):
    """No labels: the classifier extractor is refused in one line; Inception works."""
    import json

    rng = np.random.default_rng(0)
    for i in range(400):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
            (tmp_path / "imgs").mkdir(exist_ok=True) or tmp_path / "imgs" / f"{i}.png")
    params = {"data": {"dataset": "folder", "root": "imgs", "resolution": 8}}
    bad = _prepare(tmp_path, params)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: eval.features: 'classifier' needs a labelled dataset and folder at imgs has "
        "no labels; allowed here: inception"]
    params["eval"] = {"features": "inception", "inception_weights": str(inception_weights),
                      "inception_dims": 64}
    ok = _prepare(tmp_path, params)
    assert ok.returncode == 0, ok.stderr
    feats = tmp_path / "outputs" / "prepare" / "features"
    assert set(json.loads((feats / "index.json").read_text())) == {"inception"}
    assert not (feats / "classifier.pt").exists()
    metrics = json.loads((tmp_path / "outputs" / "prepare" / "metrics.json").read_text())
    assert metrics["floor_samples"] == 80 and 0 < metrics["fid_copier"] < 100
    assert metrics["fid_copier_draws"] >= 50 and 0 < metrics["fid_copier_se"]
    assert metrics["fid_novel"] > metrics["fid_copier"] and metrics["fid_heldout"] > 0
    with np.load(feats / "floor-draws.npz") as draws:
        assert len(draws["copier"]) == metrics["fid_copier_draws"]
        assert draws["novel"].mean() == pytest.approx(metrics["fid_novel"])


# ---- hostile and unlucky files: read right, or one DataError line naming the file -----------

def _one_line_naming(err, path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_a_batch_above_the_size_cap_is_refused_before_reading(tmp_path):
    from resgan.data import CIFAR_BATCH_MAX_BYTES, _read_cifar_batch

    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        f.truncate(CIFAR_BATCH_MAX_BYTES + 1)  # sparse: no disk used
    with pytest.raises(DataError, match="more than a batch's") as err:
        _read_cifar_batch(path)
    _one_line_naming(err, path)


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_a_valid_batch_at_any_protocol_is_read(tmp_path, protocol):
    from resgan.data import _read_cifar_batch

    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    (tmp_path / "b").write_bytes(pickle.dumps({b"data": data, b"labels": [3, 9]}, protocol=protocol))
    got, labels = _read_cifar_batch(tmp_path / "b")
    np.testing.assert_array_equal(got, data)
    assert labels.tolist() == [3, 9]


def _bad_png_cases(root):
    """name -> (path written, regex of the reason)."""
    root.mkdir(parents=True, exist_ok=True)
    good = root / "good.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(good)
    cases = {}
    (root / "random.png").write_bytes(os.urandom(300))
    cases["random bytes"] = (root / "random.png", "not a readable image")
    noisy = root / "noisy.png"  # incompressible: a cut loses pixels
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noisy)
    (root / "cut.png").write_bytes(noisy.read_bytes()[:6000])
    noisy.unlink()
    cases["truncated"] = (root / "cut.png", "not a readable image .*truncated")
    (root / "passwd.png").symlink_to("/etc/passwd")
    cases["a symlink to a system file"] = (root / "passwd.png", "not a readable image")
    big = root / "huge.png"
    Image.new("1", (9000, 9000)).save(big)  # 9000 x 9000 in a few KB
    cases["9000 x 9000"] = (big, r"9000x9000 pixels, more than")
    header = bytearray(good.read_bytes())
    header[16:24] = struct.pack(">II", 20000, 10000)  # IHDR claims 20000 x 10000 ...
    header[29:33] = struct.pack(">I", zlib.crc32(bytes(header[12:29])))  # ... with a valid CRC
    (root / "claims.png").write_bytes(bytes(header))
    cases["a header claiming 20000 x 10000"] = (root / "claims.png", r"claims more than the .* "
                                                                     r"pixels an image may have")
    return cases


def test_every_unreadable_image_is_refused_in_one_line_naming_it(tmp_path):
    cases = _bad_png_cases(tmp_path / "all")
    for what, (path, why) in cases.items():
        folder = tmp_path / what.replace(" ", "_")
        folder.mkdir()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "good.png")
        target = folder / path.name
        if path.is_symlink():
            target.symlink_to(os.readlink(path))
        else:
            target.write_bytes(path.read_bytes())
        with pytest.raises(DataError) as err:
            load_dataset("folder", 8, root=folder)
        msg = _one_line_naming(err, target)
        assert re.search(why, msg), (what, msg)


def test_hidden_files_and_macos_resource_forks_are_skipped(tmp_path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07" + bytes(100))  # AppleDouble
    (tmp_path / ".thumbs").mkdir()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / ".thumbs" / "b.png")
    x, _ = load_dataset("folder", 8, root=tmp_path)
    assert x.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(x[0, :, 4, 4], [1, -1, -1], atol=1e-5)


def test_16_bit_grey_images_are_scaled_not_clipped(tmp_path):
    for i, value in enumerate((0, 16384, 32768, 65535)):
        Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(tmp_path / f"{i}.png")
    assert Image.open(tmp_path / "1.png").mode.startswith("I")  # really 16-bit on disk
    x, _ = load_dataset("folder", 8, root=tmp_path)
    expected = np.array([0, 16384, 32768, 65535]) / 65535 * 2 - 1
    np.testing.assert_allclose(x[:, 0, 4, 4], expected, atol=1e-4)
    np.testing.assert_allclose(x[:, 0], x[:, 2])  # grey over the three channels


def test_png_mutation_fuzz_never_escapes(tmp_path):
    """Valid PNGs with bytes flipped, cut or inserted: read, or DataError naming the file."""
    import io
    import random

    rng = random.Random(0)
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, "PNG")
    seed = buf.getvalue()
    refused = 0
    for i in range(300):
        raw = bytearray(seed)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(raw))
            if rng.random() < 0.5:
                raw[at] = rng.randrange(256)
            else:
                del raw[at:at + rng.randint(1, 8)]
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "x.png").write_bytes(bytes(raw))
        try:
            load_dataset("folder", 8, root=folder)
        except DataError as err:
            assert "\n" not in str(err) and "x.png" in str(err), str(err)
            refused += 1
    assert refused > 30


def _write_idx_raw(path, magic: bytes, dims: tuple, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(magic + struct.pack(f">{len(dims)}I", *dims) + payload)


@pytest.mark.parametrize("case, why", [
    ("counts", r"train-images-idx3-ubyte has 12 images but .*train-labels-idx1-ubyte 11 labels"),
    ("labels", r"t10k-labels-idx1-ubyte: labels 0-195, not 0-9"),
    ("shape", r"t10k-images-idx3-ubyte: images of shape \(20, 20\), not 28 x 28"),
    ("magic", r"the IDX files under .* are not valid"),
    ("truncated", r"the IDX files under .* are not valid"),
])
def test_broken_idx_files_are_one_line(tmp_path, case, why):
    _mnist_files(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    if case == "counts":
        write_idx(raw / "train-labels-idx1-ubyte", np.arange(11) % 3)
    elif case == "labels":
        write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(6) * 39 % 200)
    elif case == "shape":
        write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((6, 20, 20), np.uint8))
    elif case == "magic":
        p = raw / "train-images-idx3-ubyte"
        p.write_bytes(b"\x00\x00\x09\x07" + p.read_bytes()[4:])
    else:
        p = raw / "train-images-idx3-ubyte"
        p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", 16, root=tmp_path, download=False)
    msg = str(err.value)
    assert "\n" not in msg and re.search(why, msg), msg
