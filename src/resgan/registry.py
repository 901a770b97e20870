"""Model registry: log the generator, register a version, move ``champion`` only if better.

A version is always registered (the record of what was trained); the alias moves to it
only when its FID is lower than the champion's, measured with the same extractor and the
same number of samples (FID is biased by both, so other figures are not comparable).
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from resgan import tracking
from resgan.training import checkpoint as ckpt_io

ALIAS = "champion"


@dataclass
class Decision:
    promoted: bool
    reason: str
    version: str
    fid: float
    champion_version_before: str | None
    champion_fid_before: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def should_promote(new: dict[str, Any], champion: dict[str, Any] | None) -> tuple[bool, str]:
    """The gate. ``new`` and ``champion`` hold fid, features and num_samples (or None)."""
    if not math.isfinite(float(new["fid"])):
        return False, "the new FID is not finite"
    if champion is None:
        return True, "no champion yet"
    for key in ("features", "num_samples"):
        if str(champion.get(key)) != str(new[key]):
            return False, (f"not comparable: champion's FID used {key}={champion.get(key)}, "
                           f"this one {new[key]}")
    old = float(champion["fid"])
    if float(new["fid"]) < old:
        return True, f"FID {float(new['fid']):.4f} < champion's {old:.4f}"
    return False, f"FID {float(new['fid']):.4f} >= champion's {old:.4f}"


def git_commit(cwd: str | Path = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def log_generator(generator_path: str | Path, run_id: str) -> str:
    """Log G_ema to the run as an MLflow PyTorch model in the pt2 format (torch.export,
    no pickle) plus the self-describing state-dict file; return the model URI."""
    import mlflow
    from mlflow.models import infer_signature

    state = ckpt_io.load(generator_path)
    G = ckpt_io.generator_from(state)
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = G(z)
    mlflow.set_tracking_uri(tracking.tracking_uri())
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            G, name="generator", serialization_format="pt2", input_example=z.numpy(),
            signature=infer_signature(z.numpy(), out.numpy()),
            metadata={"z_dim": G.z_dim, "G_kwargs": state["G_kwargs"]})
        mlflow.log_artifact(str(generator_path), artifact_path="generator_state")
    return info.model_uri


def register(generator_path: str | Path, *, run_id: str, model_name: str,
             evaluation: dict[str, Any], commit: str) -> Decision:
    """Register a new version from a train run and apply the champion gate.

    Args:
        generator_path: the train stage's generator file.
        run_id: the MLflow run the generator came from.
        model_name: registered model name.
        evaluation: evaluate's metrics (fid, features, num_samples).
        commit: the git commit recorded on the version.
    """
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    model_uri = log_generator(generator_path, run_id)
    try:
        c.create_registered_model(model_name)
    except MlflowException:
        pass  # already there
    # a tracking server needs the logged model's id beside its models:/ source
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = c.create_model_version(model_name, source=model_uri, run_id=run_id, model_id=model_id)
    tags = {"fid": repr(float(evaluation["fid"])), "features": evaluation["features"],
            "num_samples": str(evaluation["num_samples"]), "git_commit": commit,
            "fid_floor": repr(float(evaluation.get("fid_floor", math.nan)))}
    for k, v in tags.items():
        c.set_model_version_tag(model_name, mv.version, k, v)
    try:
        champ = c.get_model_version_by_alias(model_name, ALIAS)
        champion = dict(champ.tags, version=champ.version)
    except MlflowException:
        champion = None
    promote, reason = should_promote(
        {k: evaluation[k] for k in ("fid", "features", "num_samples")}, champion)
    if promote:
        c.set_registered_model_alias(model_name, ALIAS, mv.version)
    c.set_model_version_tag(model_name, mv.version, "promotion", reason)
    return Decision(promoted=promote, reason=reason, version=str(mv.version),
                    fid=float(evaluation["fid"]),
                    champion_version_before=None if champion is None else str(champion["version"]),
                    champion_fid_before=None if champion is None else float(champion["fid"]))


def load_generator(uri: str, device: str | torch.device = "cpu"):
    """A callable z -> images from a checkpoint/generator file or an MLflow model URI
    (``models:/resgan@champion``, ``runs:/<id>/generator``). Returns (G, z_dim)."""
    if "://" not in uri and ":/" not in uri:
        state = ckpt_io.load(uri, device=device)
        G = ckpt_io.generator_from(state, device=device)
        return G, G.z_dim
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    info = mlflow.models.get_model_info(uri)
    z_dim = int((info.metadata or {}).get("z_dim") or info.signature.inputs.inputs[0].shape[1])
    model = mlflow.pytorch.load_model(uri, device=device)  # pt2: torch.export, no pickle
    return model, z_dim
