"""The house reads top-down: stages -> training/tuning/registry -> runtime, metrics, data, nets.

Checked on the source (imports anywhere in a module, lazy ones included), so a new import
that breaks a layer fails here rather than in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "resgan"
MODULES = sorted([*SRC.rglob("*.py"), *(ROOT / "pipeline").glob("*.py")])


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports_top(path: Path, top: str) -> list[str]:
    return sorted(n for n in _imports(path) if n == top or n.startswith(top + "."))


RAY_ALLOWED = ("src/resgan/runtime/", "src/resgan/training/", "src/resgan/tuning.py")


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_only_runtime_training_and_tuning_import_ray(path):
    if _rel(path).startswith(RAY_ALLOWED):
        return
    assert not _imports_top(path, "ray"), f"{_rel(path)} imports Ray: go through resgan.runtime"


PURE = ("src/resgan/nets/", "src/resgan/losses.py", "src/resgan/metrics/", "src/resgan/data.py",
        "src/resgan/safe_pickle.py", "src/resgan/augment.py", "src/resgan/config.py",
        "src/resgan/training/loop.py", "src/resgan/training/job.py")


@pytest.mark.parametrize("path", [p for p in MODULES if _rel(p).startswith(PURE)], ids=_rel)
def test_the_ml_core_imports_neither_ray_nor_mlflow(path):
    assert not _imports_top(path, "ray") and not _imports_top(path, "mlflow"), _rel(path)


def test_ray_internals_only_in_ray_private():
    """Private Ray APIs (ray._private, ray._raylet, ray.train.v2._internal) in one module."""
    found = {_rel(p): [n for n in _imports(p) if n.startswith("ray.") and "._" in "." + n[4:]
                       or n.startswith("ray._")]
             for p in MODULES if _rel(p) != "src/resgan/runtime/ray_private.py"}
    assert {k: v for k, v in found.items() if v} == {}


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_the_library_never_imports_the_stage_scripts(path):
    if _rel(path).startswith("src/"):
        assert not _imports_top(path, "pipeline"), _rel(path)
