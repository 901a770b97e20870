"""The README and docs/ name only what exists: files, links and their anchors, params keys,
make targets, `resgan` and `dvc` subcommands, stage outputs.

A doc that names a file that moved, a key that was renamed or a command that was removed
fails here, not in a user's terminal.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FRONT_DOORS = [ROOT / "README.md", ROOT / "docs/results.md", ROOT / "docs/reference.md",
               ROOT / "docs/operations.md"]

STAGE_FOLDERS = ("prepare/", "tune/", "train/", "eval/", "register/")  # named from outputs/
FILE_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".json", ".csv", ".png", ".html", ".txt",
                 ".toml", ".lock", ".npz", ".pt", ".log")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", path.read_text(), re.M)}


def _code_spans(text: str) -> list[str]:
    """Inline code spans and the lines of indented code blocks (but the layout tree's)."""
    text = _LAYOUT.sub("", text)
    spans = re.findall(r"`([^`\n]+)`", text)
    spans += [line.strip() for line in text.splitlines() if line.startswith("    ")]
    return spans


# The README's layout: an indented tree, names in the first 26 columns, then what they are.
_LAYOUT = re.compile(r"^## Layout\n\n((?:    .*\n)+)", re.M)


def _layout_paths(text: str) -> list[str]:
    """Every name of the layout tree as a path from the root (a child under its folder)."""
    block = _LAYOUT.search(text)
    assert block, "the README has no Layout tree"
    paths, parents = [], []  # parents: (indent, folder) of the enclosing folders
    for line in block.group(1).splitlines():
        indent = len(line) - len(line.lstrip())
        names = line[:30].replace(",", " ").split()
        if not names:  # a description continued
            continue
        parents = [(i, p) for i, p in parents if i < indent]
        prefix = parents[-1][1] if parents else ""
        for name in names:
            paths.append(prefix + name)
        if names[-1].endswith("/") and len(names) == 1:
            parents.append((indent, prefix + names[-1]))
    return paths


def test_layout_names_exist():
    missing = [p for p in _layout_paths((ROOT / "README.md").read_text())
               if not p.startswith(("outputs/", "mlruns/")) and not (ROOT / p).exists()]
    assert not missing, f"the README's Layout names what does not exist: {missing}"


def _dvc_outs() -> list[str]:
    outs = []
    for dvc_yaml in [ROOT / "dvc.yaml", *ROOT.glob("studies/*/dvc.yaml")]:
        for stage in yaml.safe_load(dvc_yaml.read_text())["stages"].values():
            for kind in ("outs", "metrics", "plots"):
                for entry in stage.get(kind, []):
                    outs.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return outs


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_and_anchors_exist(doc):
    text = doc.read_text()
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"https?://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            missing.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            missing.append(target)
    assert not missing, f"{doc.name} links to what does not exist: {missing}"


def _looks_like_path(token: str) -> bool:
    """A file name, or a folder path: not a ratio (images/s) or a pair (promote/rollback)."""
    token = token.rstrip(".,:;")
    if " " in token or token.startswith(("http", "-", "/", "s3:", "gs:", "models:", "sqlite:")):
        return False
    if any(c in token for c in "*={}()'\"…"):
        return False
    if ":" in token:  # a URI
        return False
    # a folder path names the repository's folders or a stage's (others are the user's data)
    first = token.split("/")[0]
    return "/" in token and ((ROOT / first).exists() or first + "/" in STAGE_FOLDERS)


def _declared(path: str, outs: list[str]) -> bool:
    """``path`` is (under, or above) something a dvc.yaml declares, or a stage's log."""
    path = path.rstrip("/")
    return path.startswith("outputs/logs") or any(
        path.startswith(o.rstrip("/")) or o.startswith(path + "/") for o in outs)


@pytest.mark.parametrize("doc", FRONT_DOORS, ids=lambda p: p.name)
def test_named_paths_exist(doc):
    """A path with a folder in it exists in the repository, or a stage declares it."""
    outs = _dvc_outs()
    missing = []
    for span in _code_spans(doc.read_text()):
        for token in (t.rstrip(".,:;") for t in span.split()):
            if "/" not in token or not _looks_like_path(token) or \
                    token.startswith(("dvc_plots/", "mlruns/", ".venv/", ".dvc/tmp/", "~/", "$")) \
                    or "<" in token:
                continue
            if token.startswith(STAGE_FOLDERS):  # named relative to outputs/
                token = "outputs/" + token
            ok = _declared(token, outs) if token.startswith("outputs/") else \
                (ROOT / token).exists()
            if not ok:
                missing.append(token)
    assert not missing, f"{doc.name} names paths that do not exist: {sorted(set(missing))}"


def _params_keys() -> set[str]:
    keys = set()
    for params in [ROOT / "params.yaml", *ROOT.glob("configs/*.yaml")]:
        for section, body in yaml.safe_load(params.read_text()).items():
            keys.add(section)
            for key in (body or {}):
                keys.add(f"{section}.{key}")
    return keys


@pytest.mark.parametrize("doc", FRONT_DOORS, ids=lambda p: p.name)
def test_named_params_exist(doc):
    keys = _params_keys()
    sections = {k for k in keys if "." not in k}
    missing = []
    for span in _code_spans(doc.read_text()):
        for m in re.finditer(r"(?<![\w./-])([a-z]+)\.([a-z_0-9]+)(?![\w./(])", span):
            if m.group(1) in sections and m.group(0) not in keys and \
                    not m.group(0).endswith(FILE_SUFFIXES):
                missing.append(m.group(0))
    assert not missing, f"{doc.name} names params that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("doc", FRONT_DOORS, ids=lambda p: p.name)
def test_named_make_targets_exist(doc):
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    named = set(re.findall(r"`make ([a-z][\w-]*)`", doc.read_text()))
    named |= {m.group(1) for line in _code_spans(doc.read_text())
              for m in [re.match(r"(?:\w+=\S+ )*make ([a-z][\w-]*)", line)] if m}
    assert named - targets == set(), f"{doc.name}: no make target {sorted(named - targets)}"


@pytest.mark.parametrize("doc", FRONT_DOORS, ids=lambda p: p.name)
def test_named_resgan_commands_exist(doc):
    from resgan.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.choices and "sample" in a.choices)
    named = set(re.findall(r"(?:^|`)resgan ([a-z]+)", doc.read_text(), re.M))
    named |= {m.group(1) for line in _code_spans(doc.read_text())
              for m in [re.match(r"resgan ([a-z]+)", line)] if m}
    assert named - set(sub.choices) == set(), \
        f"{doc.name}: no resgan command {sorted(named - set(sub.choices))}"


def test_named_dvc_commands_exist():
    """Every `dvc <command>` the front doors name is a command of the pinned DVC."""
    dvc = Path(sys.executable).with_name("dvc")
    out = subprocess.run([str(dvc), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    known = set()
    for name, alias in re.findall(r"^ {4}([a-z-]+)(?: \(([a-z]+)\))?\s", out.stdout, re.M):
        known |= {name, alias} - {""}
    named = set()
    for doc in FRONT_DOORS:
        for span in _code_spans(doc.read_text()):
            named |= set(re.findall(r"(?:^|&& |\| )dvc ([a-z]+)", span))
    assert "repro" in known and "exp" in known
    assert named and named - known == set(), f"no dvc command {sorted(named - known)}"


def test_readme_is_a_front_door():
    """The README stays short: history goes to docs/results.md, operations to docs/."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert 100 <= len(lines) <= 250
