"""dvc.yaml lists the code each stage runs: a change to it must re-run the stage.

The modules are derived, not listed by hand: every `resgan` import of the stage script,
followed through the library (imports inside functions too, so this is a superset of what
one run executes), and each module's file must be a dep of the stage, itself or a folder
above it. A package `__init__.py` with no imports and no code (a docstring, a version) runs
nothing that could change a result and is not required.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
STAGES = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


def _study_stages() -> dict[str, dict]:
    """The studies' stages that train or score (``studies/<name>/dvc.yaml:<stage>``), their
    script and deps as repository paths (a stage runs in its ``wdir``, relative to its file).
    A `report` stage only renders tables from earlier results; it is not among them."""
    import os

    stages = {}
    for f in sorted(ROOT.glob("studies/*/dvc.yaml")):
        for name, spec in YAML(typ="safe").load(f.read_text())["stages"].items():
            if name == "report":
                continue
            wdir = (f.parent / spec.get("wdir", ".")).resolve()
            repo = lambda p: Path(os.path.normpath(wdir / p)).relative_to(ROOT).as_posix()  # noqa: E731
            script = next(w for w in spec["cmd"].split() if w.endswith(".py"))
            stages[f"{f.parent.relative_to(ROOT).as_posix()}/dvc.yaml:{name}"] = {
                "cmd": f"python {repo(script)}", "deps": [repo(d) for d in spec["deps"]]}
    return stages


ALL_STAGES = {**STAGES, **_study_stages()}


def _module_file(name: str) -> Path | None:
    p = SRC.joinpath(*name.split("."))
    for f in (p / "__init__.py", p.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def _imports(path: Path, package: str) -> set[str]:
    """Every resgan module named by an import in ``path`` (``package``: for relative ones)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names |= {mod} | {f"{mod}.{a.name}" for a in node.names}  # a name may be a module
    return {n for n in names if n.split(".")[0] == "resgan"}


def _runs_nothing(f: Path) -> bool:
    """A module of a docstring and plain assignments of constants only."""
    body = ast.parse(f.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
               or isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) for n in body)


def code_of(script: Path) -> set[str]:
    """Repository paths of the library modules ``script`` may import, transitively."""
    seen: set[str] = set()
    todo = [(script, "pipeline")]
    while todo:
        path, package = todo.pop()
        for name in _imports(path, package):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                mod = ".".join(parts[:i])
                f = _module_file(mod)
                if f is None or mod in seen:
                    continue
                seen.add(mod)
                todo.append((f, mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]))
    files = (_module_file(m) for m in seen)
    return {f.relative_to(ROOT).as_posix() for f in files if not _runs_nothing(f)}


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(ALL_STAGES))
def test_every_module_a_stage_imports_is_a_dep(stage):
    spec = ALL_STAGES[stage]
    script = spec["cmd"].split()[1]
    assert script in spec["deps"], f"{stage}: its script {script} is not a dep"
    code = code_of(ROOT / script)
    assert "src/resgan/config.py" in code  # the derivation itself works (every stage validates)
    missing = sorted(f for f in code if not _covered(f, spec["deps"]))
    assert not missing, f"dvc.yaml stage {stage} runs {missing} but does not list them as deps"


def test_the_derivation_follows_lazy_and_transitive_imports():
    code = code_of(ROOT / "pipeline/tune.py")
    # tune.py imports resgan.tuning, which imports the Ray Train driver, which runs the loop
    assert {"src/resgan/tuning.py", "src/resgan/training/ray_train.py",
            "src/resgan/training/loop.py", "src/resgan/augment.py"} <= code
    assert "src/resgan/registry.py" not in code  # and not everything
    assert not _covered("src/resgan/registry.py", STAGES["tune"]["deps"])
