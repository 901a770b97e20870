"""Datasets, splits and their on-disk format.

A split is one ``.npz`` file with ``x`` (float32, N x C x R x R, in [-1, 1]) and ``y``
(int64 labels, -1 where unknown). Datasets:

- ``digits``: scikit-learn's handwritten digits, 1,797 real 8x8 images in 17 grey levels,
  shipped inside scikit-learn (the default: no download, no files).
- ``mnist``, ``fashion-mnist``: the IDX files under ``<root>/MNIST/raw`` or
  ``<root>/FashionMNIST/raw``, read by torchvision (train and test sets together).
- ``cifar10``: the python batches under ``<root>/cifar-10-batches-py``.
- ``folder``: every PNG/JPEG/... under ``<root>``, converted to RGB, resized and centre
  cropped; labelled by class sub-folder when every image sits in one (ImageFolder layout).

Missing files are downloaded through torchvision where ``download`` is on and the network
allows; otherwise a ``DataError`` says where to put them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "folder")
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")


class DataError(RuntimeError):
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


def _mnist(name: str, root: Path, download: bool) -> tuple[torch.Tensor, np.ndarray]:
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    raw = root / cls.__name__ / "raw"
    files = ", ".join(Path(url).name.removesuffix(".gz") for url, _ in cls.resources)
    parts = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=download)
        except Exception as exc:  # RuntimeError (not found) or a network error
            how = "download failed" if download else "data.download is false"
            raise DataError(
                f"{name}: IDX files not found under {raw} and {how} "
                f"({exc.__class__.__name__}): put {files} there, "
                "or run once where the network allows") from None
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


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: CIFAR's batches are pickles, and a
    pickle from elsewhere must not be able to run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):  # numpy 2 moved numpy.core to numpy._core
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3 * 32 * 32)
        labels = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
    except Exception as exc:
        raise DataError(f"cifar10: {path} is not a CIFAR-10 python batch ({exc})") from None
    if len(labels) != len(data):
        raise DataError(f"cifar10: {path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def _folder(root: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets.folder import default_loader
    from torchvision.transforms import v2

    if not root.is_dir():
        raise DataError(f"folder: {root} is not a folder (set data.root to a folder of images)")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"folder: no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    # Labelled when every image sits in a class sub-folder (torchvision's ImageFolder layout).
    classes = sorted({f.relative_to(root).parts[0] for f in files if f.parent != root})
    labelled = len(classes) >= 2 and all(f.parent != root for f in files)
    to_tensor = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
                            v2.Resize(resolution, antialias=True), v2.CenterCrop(resolution)])
    x = torch.stack([to_tensor(default_loader(str(f))) for f in files])  # RGB
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
