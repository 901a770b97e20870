"""Self-describing checkpoints: state dicts plus the model arguments and resolved config.

Everything in them is a tensor, a number, a string, a list or a dict, so they load with
``torch.load(..., weights_only=True)`` and never unpickle code.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from resgan.nets import Generator

CKPT_FILE = "checkpoint.pt"
_NUMBERED = re.compile(r"checkpoint_(\d+)$")


def filesystem(location: str | Path):
    """(pyarrow filesystem, path in it) of a local path or a URI (s3://, gs://, ...)."""
    import pyarrow.fs

    loc = str(location)
    return pyarrow.fs.FileSystem.from_uri(loc if "://" in loc else Path(loc).resolve().as_uri())


def _write(fs, target: str, state: dict[str, Any]) -> None:
    """Write ``state`` to ``target`` in ``fs`` beside it, then move it into place: a crash
    never leaves half a checkpoint under the name."""
    buf = io.BytesIO()
    torch.save(state, buf)
    with fs.open_output_stream(f"{target}.part") as f:
        f.write(buf.getvalue())
    fs.move(f"{target}.part", target)


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` as the file ``path`` (a local path or a URI)."""
    fs, target = filesystem(path)
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    _write(fs, target, state)


def keep(root: str, state: dict[str, Any]) -> str:
    """Save ``state`` as ``<root>/checkpoint_<epoch>/checkpoint.pt`` (``root`` an absolute
    path or a URI) and return that folder: written beside, then moved into place, so
    ``newest`` never finds half a checkpoint. Ray Train's local mode keeps no checkpoints of
    its own (see resgan.training.ray_train)."""
    fs, base = filesystem(root)
    name = f"checkpoint_{int(state['epoch']):06d}"
    fs.create_dir(f"{base}/{name}", recursive=True)
    _write(fs, f"{base}/{name}/{CKPT_FILE}", state)
    return f"{str(root).rstrip('/')}/{name}"


def newest(root: str) -> str | None:
    """The folder of the latest complete ``keep`` checkpoint under ``root``, or None."""
    import pyarrow.fs

    fs, base = filesystem(root)
    if fs.get_file_info(base).type != pyarrow.fs.FileType.Directory:
        return None
    found = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(base)):
        m = _NUMBERED.match(info.base_name)
        if m and info.type == pyarrow.fs.FileType.Directory:
            found[int(m.group(1))] = info.base_name
    for epoch in sorted(found, reverse=True):
        if fs.get_file_info(f"{base}/{found[epoch]}/{CKPT_FILE}").type == pyarrow.fs.FileType.File:
            return f"{str(root).rstrip('/')}/{found[epoch]}"
    return None


def load(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CKPT_FILE
    return torch.load(path, map_location=device, weights_only=True)


def generator_from(state: dict[str, Any], device: str | torch.device = "cpu",
                   ema: bool = True) -> Generator:
    """Rebuild G (by default the EMA copy) from a training checkpoint or a generator file."""
    G = Generator(**state["G_kwargs"])
    key = "G_ema" if ema and "G_ema" in state else "G"
    G.load_state_dict(state[key])
    return G.to(device).eval()


def export_generator(state: dict[str, Any], path: str | Path) -> None:
    """Write the final generator file: G_ema weights, its arguments and the config."""
    save(path, {"G_kwargs": state["G_kwargs"], "G_ema": state["G_ema"], "epoch": state["epoch"],
                "config": state["config"], "metrics": state.get("metrics", {})})
