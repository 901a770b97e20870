"""resgan.safe_pickle: CIFAR-like batches at every protocol are read; hostile pickles are
refused in one line, in bounded time and memory; a mutation fuzz never escapes NotData."""

import pickle
import random
import resource
import time

import numpy as np
import pytest

from resgan.safe_pickle import MAX_DEPTH, NotData, interpret, uint8_array


def _batch(n=4):
    rng = np.random.default_rng(0)
    return {b"batch_label": b"training batch 1 of 5",
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_reads_back_exactly(protocol):
    b = _batch()
    got = interpret(pickle.dumps(b, protocol=protocol))
    assert set(got) == set(b)
    assert got[b"labels"] == b[b"labels"] and got[b"filenames"] == b[b"filenames"]
    np.testing.assert_array_equal(uint8_array(got[b"data"]), b[b"data"])


class _Py2Array:
    """Pickles like Python 2's cPickle wrote a numpy array: its bytes as a (latin-1) str."""

    def __init__(self, a):
        self.a = a

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (0,), b"b"),
                (1, self.a.shape, np.dtype("u1"), False, self.a.tobytes().decode("latin-1")))


def test_python2_style_latin1_text_data():
    b = _batch(2)
    raw = pickle.dumps({**b, b"data": _Py2Array(b[b"data"])}, protocol=2)
    np.testing.assert_array_equal(uint8_array(interpret(raw)[b"data"]), b[b"data"])


def _nested_tuple(depth: int) -> bytes:
    return b"\x80\x02" + b"N" + b"\x85" * depth + b"."  # NONE, then TUPLE1 depth times


HOSTILE = {
    "a tuple nested a million deep": _nested_tuple(1_000_000),
    "a tuple nested 100k deep": _nested_tuple(100_000),
    "REDUCE on an empty stack": b"\x80\x02R.",
    "BINPUT on an empty stack": b"\x80\x02q\x00.",
    "STACK_GLOBAL on an empty stack": b"\x80\x04\x93.",
    "BUILD on an empty stack": b"\x80\x02b.",
    "a list as a dict key": b"\x80\x02}]K\x01s.",
    "a list as a DICT key": b"\x80\x02(]K\x01d.",
    "non-latin-1 bytes text": b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00\xc4\x80X\x06\x00\x00\x00latin1\x86R.",
    "a 20,000-digit int": b"I" + b"9" * 20_000 + b"\n.",
    "5 MB of MARKs": b"\x80\x02" + b"(" * 5_000_000 + b".",
    "5 MB of MEMOIZE": b"\x80\x04N" + b"\x94" * 5_000_000 + b".",
    "os.system": b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idX\x00\x00\x00\x00\x86R.",
    "builtins.eval by STACK_GLOBAL": b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.",
    "truncated": pickle.dumps(_batch(), protocol=4)[:-7],
    "empty": b"",
    "not a pickle": b"GIF89a" + bytes(100),
    "a list appended to itself after nesting": b"\x80\x02]q\x00h\x00\x85h\x00K\x01a.",
    "BINBYTES8 claiming 2**60 bytes": b"\x80\x04\x8e" + (1 << 60).to_bytes(8, "little") + b"xx.",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_pickles_are_refused_in_one_line_in_bounded_time(case):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(NotData) as err:
        interpret(HOSTILE[case])
    assert time.perf_counter() - t0 < 5.0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300, grown_mb
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_depth_limit_by_hand():
    assert interpret(_nested_tuple(MAX_DEPTH - 1)) is not None
    with pytest.raises(NotData, match="nested deeper than"):
        interpret(_nested_tuple(MAX_DEPTH + 1))


def _array_call(shape, nbytes):
    """A protocol-2 array pickle whose header claims ``shape`` over ``nbytes`` bytes."""
    good = pickle.dumps(np.zeros((1, 4), dtype=np.uint8), protocol=4)
    return good.replace(b"K\x01K\x04\x86", b"\x8a\x08" + shape[0].to_bytes(8, "little")
                        + b"\x8a\x08" + shape[1].to_bytes(8, "little") + b"\x86")


def test_a_shape_whose_product_wraps_is_refused():
    x = interpret(_array_call((1 << 32, 1 << 32), 4))
    with pytest.raises(NotData, match="not a plain shape|more than"):
        uint8_array(x)


def test_arrays_that_are_not_plain_uint8_are_refused():
    for arr, why in ((np.zeros((2, 2), dtype=np.float32), "dtype"),
                     (np.asfortranarray(np.zeros((2, 3), dtype=np.uint8)), "C-order"),
                     (np.zeros(2, dtype=[("a", "u1")]), "dtype")):
        with pytest.raises(NotData, match=why):
            uint8_array(interpret(pickle.dumps(arr, protocol=2)))


def test_mutation_fuzz_never_escapes():
    """Thousands of valid batches with bytes flipped, cut, duplicated or inserted: each is
    read or refused with NotData (never another exception), quickly."""
    rng = random.Random(0)
    seeds = [pickle.dumps(_batch(3), protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]
    t0 = time.perf_counter()
    outcomes = {"read": 0, "refused": 0}
    for i in range(4000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(raw))
            kind = rng.randrange(4)
            if kind == 0:
                raw[at] = rng.randrange(256)
            elif kind == 1:
                del raw[at:at + rng.randint(1, 16)]
            elif kind == 2:
                raw[at:at] = raw[at:at + rng.randint(1, 32)]
            else:
                raw[at:at] = bytes([rng.choice(b"()]}tqhR\x93\x94\x85\x86\x87bsSae.")])
        try:
            got = interpret(bytes(raw))
            if isinstance(got, dict) and b"data" in got:
                uint8_array(got[b"data"])
            outcomes["read"] += 1
        except NotData:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 1000 and sum(outcomes.values()) == 4000
    assert time.perf_counter() - t0 < 60
