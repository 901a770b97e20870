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

from resgan.errors import ResganError
from resgan.nets import Generator
from resgan.runtime.files import atomic_write, filesystem

CKPT_FILE = "checkpoint.pt"
_NUMBERED = re.compile(r"checkpoint_(\d+)$")


class CheckpointError(ResganError, ValueError):
    """A checkpoint or generator file that cannot be used (one line naming it)."""


def _write(fs, target: str, state: dict[str, Any]) -> None:
    """Write ``state`` to ``target`` in ``fs`` whole (resgan.runtime.files.atomic_write): a
    crash never leaves half a checkpoint under the name, and two writers of one epoch never
    mix their bytes."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(target, buf.getvalue(), fs=fs)


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` as the file ``path`` (a local path or a URI)."""
    fs, target = filesystem(path)
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
    """The folder of the latest ``keep`` checkpoint under ``root`` that loads, or None; one
    that does not (truncated, corrupted) is skipped for the one before, said in one line."""
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
        if fs.get_file_info(f"{base}/{found[epoch]}/{CKPT_FILE}").type != pyarrow.fs.FileType.File:
            continue
        folder = f"{str(root).rstrip('/')}/{found[epoch]}"
        try:
            with fs.open_input_stream(f"{base}/{found[epoch]}/{CKPT_FILE}") as f:
                check(torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True),
                      folder)
        except Exception as exc:  # truncated, not a torch file, wrong content
            from resgan.console import say

            say(f"warning: checkpoint {folder} cannot be loaded ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:120] if str(exc) else 'no detail'}): using the "
                f"one before it")
            continue
        return folder
    return None


# What a checkpoint may declare before anything is allocated (config.ModelConfig's bounds).
_G_LIMITS = {"z_dim": (1, 1024), "channels": (4, 1024), "depth": (1, 8), "img_channels": (1, 4)}
_RESOLUTIONS = (8, 16, 32, 64)


def check(state: Any, where: str | Path = "checkpoint") -> dict[str, Any]:
    """A loaded checkpoint or generator file, checked to be one before a network is built
    from it: G's arguments within the bounds params.yaml allows (a 1 KB file declaring
    100,000 channels would otherwise allocate hundreds of GB).

    Raises:
        CheckpointError: one line naming ``where``.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: not a resgan checkpoint (not a dict)")
    if "G_kwargs" not in state:
        return state  # nothing to build from it (callers that build one say so)
    kw = state["G_kwargs"]
    if not isinstance(kw, dict):
        raise CheckpointError(f"{where}: G_kwargs is not a dict")
    for key, (low, high) in _G_LIMITS.items():
        v = kw.get(key)
        if v is not None and not (type(v) is int and low <= v <= high):
            raise CheckpointError(f"{where}: G_kwargs.{key} = {v!r}, not an int in {low}-{high}")
    if kw.get("resolution") not in _RESOLUTIONS:
        raise CheckpointError(f"{where}: G_kwargs.resolution = {kw.get('resolution')!r}, "
                              f"not one of {', '.join(map(str, _RESOLUTIONS))}")
    unknown = set(kw) - set(_G_LIMITS) - {"resolution", "residual"}
    if unknown:
        raise CheckpointError(f"{where}: G_kwargs has unknown keys {sorted(unknown)}")
    return state


def load(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint (file or its folder; a local path or a URI), loaded with
    ``weights_only=True`` and checked."""
    if "://" in str(path):  # remote storage (ray.storage_path on s3://, gs://, ...)
        import pyarrow.fs

        fs, where = filesystem(path)
        if fs.get_file_info(where).type == pyarrow.fs.FileType.Directory:
            where = f"{where.rstrip('/')}/{CKPT_FILE}"
        with fs.open_input_stream(where) as f:
            data = io.BytesIO(f.read())
        return check(torch.load(data, map_location=device, weights_only=True), path)
    path = Path(path)
    if path.is_dir():
        path = path / CKPT_FILE
    return check(torch.load(path, map_location=device, weights_only=True), path)


def generator_from(state: dict[str, Any], device: str | torch.device = "cpu",
                   ema: bool = True) -> Generator:
    """Rebuild G (by default the EMA copy) from a training checkpoint or a generator file."""
    if not isinstance(state, dict) or "G_kwargs" not in state:
        raise CheckpointError("not a generator file or training checkpoint (no G_kwargs)")
    G = Generator(**check(state)["G_kwargs"])
    key = "G_ema" if ema and "G_ema" in state else "G"
    G.load_state_dict(state[key])
    return G.to(device).eval()


def export_generator(state: dict[str, Any], path: str | Path) -> None:
    """Write the final generator file: G_ema weights, its arguments and the config."""
    save(path, {"G_kwargs": state["G_kwargs"], "G_ema": state["G_ema"], "epoch": state["epoch"],
                "config": state["config"], "metrics": state.get("metrics", {})})
