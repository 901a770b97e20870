"""Read data out of a pickle without unpickling it.

Unpickling runs whatever the file names, and even an allow-list of numpy's own constructors
can be driven to read raw bytes as object pointers (a dtype whose state gives it an object
field). So ``interpret`` reads the opcodes one at a time and builds only plain containers,
strings, bytes and numbers. Globals are kept as names (``Name``) and their calls recorded
(``Call``), never made; the one exception is ``_codecs.encode(str, "latin1")``, which Python
3 writes for bytes at protocols 0-2 and is evaluated (it only turns text into bytes).
``uint8_array`` then accepts a recorded numpy array only as a plain C-order uint8 array with
as many bytes as its shape says, made by ``np.frombuffer``.

Every limit is checked as the opcodes arrive, so a hostile file costs bounded time and memory:
its size (``max_bytes``), the opcode count, the nesting depth of containers, the open MARKs.
Anything else is refused with ``NotData`` in one line.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

MAX_OPS = 200_000  # a CIFAR-10 batch has about 40,000 (10,000 labels and file names)
MAX_DEPTH = 16  # containers inside containers (a CIFAR batch: 4)
MAX_MARKS = 64
MAX_INT_DIGITS = 30  # a text-encoded int longer than this is refused (Python's own limit is 4300)


class NotData(ValueError):
    """The bytes are not a pickle of the expected data (the message says why, in one line)."""


class Name(tuple):
    """A global a pickle names (module, name): never imported."""


class Call:
    """A REDUCE that was recorded, not made (and the state a BUILD gave it)."""

    def __init__(self, func: Name, args: tuple):
        self.func, self.args, self.state, self.built = func, args, None, False


# The names a numpy uint8 array needs, at every pickle protocol (numpy 1 and 2 module paths).
NUMPY_NAMES = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")})

_PUSH = {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BINSTRING",
         "SHORT_BINSTRING", "STRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BININT",
         "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT"}
_CONST = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_KEY_TYPES = (str, bytes, int)


def interpret(raw: bytes, *, names: frozenset = NUMPY_NAMES, max_ops: int = MAX_OPS) -> Any:
    """The object a pickle describes, built from plain containers, Name and Call only.

    Raises:
        NotData: not a pickle, an opcode or global outside what data needs, or a limit passed.
    """
    import pickletools

    machine = _Machine(names)
    ops = pickletools.genops(io.BytesIO(raw))
    for count in range(max_ops + 1):
        try:
            op, arg, _ = next(ops)
        except StopIteration:
            raise NotData("not a pickle (it ends before STOP)") from None
        except Exception as exc:  # truncated, a bad length, an int too long to parse, ...
            raise NotData(f"not a pickle ({str(exc).splitlines()[0][:120]})") from None
        if count == max_ops:
            break
        if op.name == "STOP":
            return machine.result()
        machine.step(op.name, arg)
    raise NotData(f"pickle: more than {max_ops:,} opcodes")


class _Machine:
    """The pickle machine's stack, marks and memo, for the opcodes data needs: values and
    containers, memo, the allowed globals and their calls. Every container it builds is
    recorded with its nesting depth (bounded) and sealed once inside another (a pickle that
    changes a nested container is refused)."""

    def __init__(self, names: frozenset):
        self.names = names
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.depth: dict[int, int] = {}  # id -> nesting depth, for the containers built here
        self.sealed: set[int] = set()  # containers already inside another: no longer mutable
        self.keep: list = []  # keeps every container alive, so that ids stay unique

    def result(self) -> Any:
        if len(self.stack) != 1 or self.marks:
            raise NotData("pickle: an unbalanced stack at STOP")
        return self.stack[0]

    def step(self, name: str, arg: Any) -> None:
        stack = self.stack
        if name in ("PROTO", "FRAME"):
            return
        if name in _PUSH:
            if name in ("INT", "LONG") and len(str(arg)) > MAX_INT_DIGITS:
                raise NotData("pickle: an int too long for data")
            stack.append(arg)
        elif name in ("BYTEARRAY8",):  # protocol 5's in-band buffer
            stack.append(bytes(arg))
        elif name in _CONST:
            stack.append(_CONST[name])
        elif name == "MARK":
            if len(self.marks) >= MAX_MARKS:
                raise NotData(f"pickle: more than {MAX_MARKS} open MARKs")
            self.marks.append(len(stack))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not stack:
                raise NotData("pickle: PUT on an empty stack")
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise NotData("pickle: GET of an unknown memo entry")
            stack.append(self.memo[arg])
        elif name in ("GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD"):
            self.call(name, arg)
        else:
            self.container(name)

    def container(self, name: str) -> None:
        """Build a container, or add items to the one on top of the stack."""
        stack = self.stack
        if name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
            stack.append(self.nest({"EMPTY_DICT": {}, "EMPTY_LIST": [], "EMPTY_TUPLE": ()}[name], ()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            items = self.pop(int(name[-1]))
            stack.append(self.nest(tuple(items), items))
        elif name in ("TUPLE", "LIST"):
            items = self.pop_mark()
            stack.append(self.nest(tuple(items) if name == "TUPLE" else items, items))
        elif name == "DICT":
            items = self.pop_mark()
            if len(items) % 2:
                raise NotData("pickle: a DICT of an odd number of items")
            _check_keys(items[::2])
            stack.append(self.nest(dict(zip(items[::2], items[1::2])), items[1::2]))
        elif name in ("APPEND", "APPENDS"):
            items = self.pop() if name == "APPEND" else self.pop_mark()
            self.nest(self.target(list), items).extend(items)
        elif name in ("SETITEM", "SETITEMS"):
            items = self.pop(2) if name == "SETITEM" else self.pop_mark()
            if len(items) % 2:
                raise NotData("pickle: SETITEMS of an odd number of items")
            _check_keys(items[::2])
            d = self.nest(self.target(dict), items[1::2])
            for key, value in zip(items[::2], items[1::2]):
                d[key] = value
        else:
            raise NotData(f"pickle opcode {name} is not one data uses")

    def call(self, name: str, arg: Any) -> None:
        """An allowed global (a Name), a call of one (a Call) and its state (BUILD)."""
        stack = self.stack
        if name in ("GLOBAL", "STACK_GLOBAL"):
            module, attr = arg.split(" ", 1) if name == "GLOBAL" else self.pop(2)
            if not isinstance(module, str) or not isinstance(attr, str) \
                    or (module, attr) not in self.names:
                raise NotData(f"pickle names {str(module)[:60]}.{str(attr)[:60]}, a global "
                              f"that data does not need")
            stack.append(Name((module.replace("numpy.core", "numpy._core", 1), attr)))
        elif name == "REDUCE":
            func, args = self.pop(2)
            if not isinstance(func, Name) or not isinstance(args, tuple):
                raise NotData("pickle: a call of something that is not an allowed name")
            stack.append(_latin1(args) if func == ("_codecs", "encode") else Call(func, args))
        else:  # BUILD
            (state,) = self.pop()
            if not stack or not isinstance(stack[-1], Call) or stack[-1].built:
                raise NotData("pickle: BUILD of something that is not a fresh array or dtype")
            stack[-1].state, stack[-1].built = state, True

    def pop(self, n: int = 1) -> list:
        stack, marks = self.stack, self.marks
        if len(stack) - (marks[-1] if marks else 0) < n:
            raise NotData("pickle: stack underflow")
        items = stack[-n:]
        del stack[-n:]
        return items

    def pop_mark(self) -> list:
        if not self.marks:
            raise NotData("pickle: a MARK is missing")
        at = self.marks.pop()
        items = self.stack[at:]
        del self.stack[at:]
        return items

    def nest(self, container, items) -> Any:
        """Record a container built from (or extended by) items: depth and sealing."""
        depth = self.depth
        d = 1 + max((depth.get(id(i), 0) for i in items), default=0)
        if d > MAX_DEPTH:
            raise NotData(f"pickle: containers nested deeper than {MAX_DEPTH}")
        depth[id(container)] = max(depth.get(id(container), 1), d)
        self.sealed.update(id(i) for i in items if id(i) in depth)
        self.keep.append(container)
        return container

    def target(self, kind: type) -> Any:
        stack, marks = self.stack, self.marks
        if not stack or not isinstance(stack[-1], kind) or (marks and marks[-1] == len(stack)):
            raise NotData(f"pickle: adds items to something that is not a {kind.__name__}")
        if id(stack[-1]) in self.sealed:
            raise NotData("pickle: changes a container after nesting it")
        return stack[-1]


def _check_keys(keys) -> None:
    for key in keys:
        if not isinstance(key, _KEY_TYPES):
            raise NotData(f"pickle: a dict key of type {type(key).__name__}")


def _latin1(args: tuple) -> bytes:
    """``_codecs.encode(text, "latin1")``: how Python 3 pickles bytes at protocols 0-2."""
    if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
        raise NotData("pickle: a _codecs.encode call that is not bytes as latin-1 text")
    try:
        return args[0].encode("latin-1")
    except UnicodeEncodeError:
        raise NotData("pickle: bytes as text outside latin-1") from None


def _as_bytes(x) -> bytes:
    """An array's raw data: bytes, or a latin-1 str (Python 2 pickles)."""
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        try:
            return x.encode("latin-1")
        except UnicodeEncodeError:
            raise NotData("an array's data is text outside latin-1") from None
    raise NotData("an array's data is not raw bytes")


def _plain_uint8(dt) -> bool:
    return (isinstance(dt, Call) and dt.func == ("numpy", "dtype") and dt.built
            and dt.args[:1] == ("u1",) and isinstance(dt.state, tuple) and len(dt.state) >= 5
            and dt.state[2:5] == (None, None, None))  # no sub-array, no field names, no fields


def _shape(shape, max_elements: int) -> tuple[int, ...]:
    if not (isinstance(shape, tuple) and len(shape) <= 8
            and all(type(n) is int and 0 <= n < 2**31 for n in shape)):
        raise NotData("data: not a plain shape")
    if math.prod(shape) > max_elements:  # exact: Python ints do not wrap
        raise NotData(f"data: a shape of {shape} is more than {max_elements:,} elements")
    return shape


def uint8_array(x, max_elements: int = 1 << 31) -> np.ndarray:
    """A recorded numpy array (``_reconstruct`` + BUILD at protocols 0-4, ``_frombuffer`` at
    protocol 5), checked to be a plain C-order uint8 array, as a new array."""
    if isinstance(x, Call) and x.func == ("numpy._core.numeric", "_frombuffer") and not x.built:
        if not (len(x.args) == 4 and _plain_uint8(x.args[1]) and x.args[3] == "C"):
            raise NotData("data: not a C-order uint8 array")
        raw, shape = _as_bytes(x.args[0]), _shape(x.args[2], max_elements)
    elif (isinstance(x, Call) and x.func == ("numpy._core.multiarray", "_reconstruct")
          and x.built and len(x.args) == 3 and x.args[0] == ("numpy", "ndarray")):
        st = x.state
        if not (isinstance(st, tuple) and len(st) == 5 and st[3] in (False, 0)):
            raise NotData("data: not a C-order array")
        if not _plain_uint8(st[2]):
            raise NotData("data: its dtype is not plain uint8")
        raw, shape = _as_bytes(st[4]), _shape(st[1], max_elements)
    else:
        raise NotData("data is not a numpy array")
    if len(raw) != math.prod(shape):
        raise NotData(f"data: {len(raw)} bytes for a shape of {shape}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()
