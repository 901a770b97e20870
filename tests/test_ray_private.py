"""Every private Ray API resgan uses is listed in one place and still exists in this Ray.

A Ray upgrade that moves or removes one fails here, naming it, instead of somewhere in a
cluster join or a placement wait."""

import ast
import importlib
from pathlib import Path

import pytest

from conftest import ROOT
from resgan.runtime import ray_private


def _resolve(dotted: str):
    module, _, attr = dotted.rpartition(".")
    try:
        return importlib.import_module(dotted)
    except ImportError:
        return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("func,name", sorted(ray_private.PRIVATE.items()))
def test_each_private_name_exists_in_this_ray(func, name):
    assert callable(getattr(ray_private, func)), func
    try:
        _resolve(name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"Ray moved or removed {name} (behind resgan.runtime.ray_private.{func}): {exc}")


def test_no_other_module_imports_ray_internals():
    """ray._raylet, ray._private and ray.*._internal appear only in ray_private.py."""
    own = ROOT / "src/resgan/runtime/ray_private.py"
    offenders = []
    for f in [p for d in ("src", "pipeline", "bench") for p in sorted((ROOT / d).rglob("*.py"))]:
        if f == own:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{f.relative_to(ROOT)}: {n}" for n in names
                          if n.startswith("ray.") and any(p.startswith("_") for p in n.split(".")[1:])]
    assert not offenders, offenders


def test_every_private_function_is_listed():
    tree = ast.parse(Path(ray_private.__file__).read_text())
    public = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    assert public == set(ray_private.PRIVATE)


def test_worker_startup_timeout_is_told_from_other_failures():
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    assert ray_private.is_worker_startup_timeout(WorkerGroupStartupTimeoutError(30.0))
    assert not ray_private.is_worker_startup_timeout(RuntimeError("x"))


def test_bootstrap_address_resolves_localhost():
    assert ray_private.bootstrap_address("localhost:6379").endswith(":6379")
    assert not ray_private.bootstrap_address("localhost:6379").startswith("localhost")
