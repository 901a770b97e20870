"""Self-describing checkpoints: state dicts plus the model arguments and resolved config.

Everything in them is a tensor, a number, a string, a list or a dict, so they load with
``torch.load(..., weights_only=True)`` and never unpickle code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from resgan.nets import Generator

CKPT_FILE = "checkpoint.pt"


def save(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a crash never leaves half a checkpoint


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
