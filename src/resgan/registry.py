"""Model registry: register every version, move ``champion`` only when it is clearly better.

A version is always registered (the record of what was trained). The gate:

- FIDs are compared only under the same scoring protocol (resgan.metrics.scoring): when the
  champion was scored under another one (another extractor or its weights, dims, sample
  count, seeds or reference statistics), the champion is re-scored now under the
  candidate's protocol and those two numbers are compared. Both are recorded.
- The candidate must beat the champion by more than ``min_improvement`` FID points, a margin
  measured from the FID's noise over sample seeds (README).
- The read-decide-move of the aliases runs under a registry-wide promotion lock, so two
  registrations at once never leave the worse model as champion.
- The replaced champion keeps the alias ``previous-champion``; ``promote`` and ``rollback``
  move the aliases by hand, recorded on the versions as manual decisions.
"""

from __future__ import annotations

import contextlib
import getpass
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from resgan import tracking
from resgan.metrics.scoring import Protocol
from resgan.training import checkpoint as ckpt_io

ALIAS = "champion"
PREVIOUS = "previous-champion"
STATE_FILE = "generator.pt"  # the state-dict file logged beside the pt2 model
LOCK_SUFFIX = "--promotion-lock"
STALE_LOCK_S = 900.0  # a lock older than this was left by a crashed registration


class RegistryError(RuntimeError):
    """An unknown model or version, or a lock that was not freed in time (one line)."""


@dataclass
class Decision:
    promoted: bool
    reason: str
    version: str
    fid: float
    fid_std: float | None
    protocol: str | None  # the candidate's protocol id
    min_improvement: float
    champion_version_before: str | None
    champion_fid_before: float | None  # as recorded on the champion
    champion_fid_compared: float | None  # what the gate compared (re-scored if protocols differ)
    champion_rescored: bool
    margin: float | None  # champion_fid_compared - fid (positive: the candidate is better)
    kind: str = "gate"  # gate or manual

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def should_promote(fid: float, champion_fid: float | None,
                   min_improvement: float) -> tuple[bool, str]:
    """The rule, on two FIDs under the same protocol (``champion_fid`` None: no champion)."""
    if not math.isfinite(fid):
        return False, "the new FID is not finite"
    if champion_fid is None:
        return True, "no champion yet"
    margin = champion_fid - fid
    if margin > min_improvement:
        return True, (f"FID {fid:.4f} beats the champion's {champion_fid:.4f} by {margin:.4f} "
                      f"> min_improvement {min_improvement}")
    return False, (f"FID {fid:.4f} vs the champion's {champion_fid:.4f}: improvement "
                   f"{margin:.4f} <= min_improvement {min_improvement}")


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
            metadata={"z_dim": G.z_dim, "G_kwargs": state["G_kwargs"]},
            # stated, not inferred: MLflow's inference runs a subprocess (about 14 s a call)
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"mlflow=={mlflow.__version__}"])
        with tempfile.TemporaryDirectory() as d:  # one name, whatever the file was called
            shutil.copy(generator_path, Path(d) / STATE_FILE)
            mlflow.log_artifact(str(Path(d) / STATE_FILE), artifact_path="generator_state")
    return info.model_uri


# ---- the promotion lock ---------------------------------------------------------------------

@contextlib.contextmanager
def promotion_lock(model_name: str, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold the registry-wide lock of ``model_name`` while aliases are read and moved.

    The lock is a registered model named ``<model_name>--promotion-lock``: creating a
    registered model is atomic in every MLflow store (a unique name in its database), so
    this works on the embedded store and on a shared ``mlflow server`` alike. A lock older
    than STALE_LOCK_S was left by a crashed holder and is broken.

    Raises:
        RegistryError: the lock was not free within ``timeout_s`` (names its holder).
    """
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    name = model_name + LOCK_SUFFIX
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            c.create_registered_model(name, tags={"holder": holder, "since": repr(time.time())},
                                      description="held while a resgan registration moves aliases")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        held = _lock_tags(c, name)
        if time.time() - float(held.get("since", "inf")) > STALE_LOCK_S:
            with contextlib.suppress(MlflowException):  # another waiter may break it first
                c.delete_registered_model(name)
            continue
        if time.monotonic() > deadline:
            raise RegistryError(
                f"waited {timeout_s:.0f} s for the promotion lock of model '{model_name}' "
                f"(registered model '{name}', held by {held.get('holder', '?')}); if no "
                f"registration is running, delete that registered model")
        time.sleep(delay)
        delay = min(1.0, delay * 1.5)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            c.delete_registered_model(name)


def _lock_tags(c, name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return dict(c.get_registered_model(name).tags)
    except MlflowException:  # freed in between
        return {"since": repr(time.time())}


# ---- versions and aliases ------------------------------------------------------------------

def _alias_version(c, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def _check_model(c, model_name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(model_name)
    except MlflowException:
        names = sorted(m.name for m in c.search_registered_models(max_results=1000)
                       if not m.name.endswith(LOCK_SUFFIX))
        raise RegistryError(f"no registered model '{model_name}' in {tracking.tracking_uri()} "
                            f"(models: {', '.join(names) or 'none'})") from None


def _check_version(c, model_name: str, version: str):
    from mlflow.exceptions import MlflowException

    _check_model(c, model_name)
    try:
        return c.get_model_version(model_name, str(version))
    except MlflowException:
        versions = sorted(int(v.version) for v in
                          c.search_model_versions(f"name='{model_name}'", max_results=10_000))
        raise RegistryError(f"model '{model_name}' has no version {version} (versions: "
                            f"{', '.join(map(str, versions)) or 'none'})") from None


def _move_champion(c, model_name: str, version: str, before) -> None:
    """champion -> version; the replaced champion becomes previous-champion."""
    c.set_registered_model_alias(model_name, ALIAS, str(version))
    if before is not None and str(before.version) != str(version):
        c.set_registered_model_alias(model_name, PREVIOUS, str(before.version))


def _tag(c, model_name: str, version: str, tags: dict[str, Any]) -> None:
    for k, v in tags.items():
        if v is not None:
            c.set_model_version_tag(model_name, str(version), k, str(v))


def champion_generator(model_name: str, version) -> torch.nn.Module:
    """A registered version's G_ema, rebuilt from its state-dict file (weights only)."""
    c = tracking.client()
    with tempfile.TemporaryDirectory() as d:
        path = c.download_artifacts(version.run_id, f"generator_state/{STATE_FILE}", d)
        return ckpt_io.generator_from(ckpt_io.load(path))


def register(generator_path: str | Path, *, run_id: str, model_name: str,
             score: dict[str, Any], commit: str, min_improvement: float = 0.0,
             rescore: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
             extra_tags: dict[str, Any] | None = None, lock_timeout_s: float = 300.0) -> Decision:
    """Register a new version from a train run and apply the champion gate.

    Args:
        generator_path: the train stage's generator file.
        run_id: the MLflow run the generator came from.
        model_name: registered model name.
        score: evaluate's score (fid, fid_std, protocol: a dict of Protocol's fields).
        commit: the git commit recorded on the version.
        min_improvement: FID points the candidate must beat the champion by.
        rescore: scores a generator under the candidate's protocol (returns fid, fid_std);
            needed when the champion was scored under another protocol, else the gate
            declines (the scores are not comparable).
        extra_tags: more version tags (fid floor, DVC experiment, ...).
        lock_timeout_s: how long to wait for another registration's gate.
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
    protocol = Protocol.from_dict(score["protocol"])
    fid, fid_std = float(score["fid"]), score.get("fid_std")
    _tag(c, model_name, mv.version, {
        "fid": repr(fid), "fid_std": None if fid_std is None else repr(float(fid_std)),
        "features": protocol.features, "num_samples": protocol.num_samples,
        "git_commit": commit, **protocol.tags(), **(extra_tags or {})})

    with promotion_lock(model_name, lock_timeout_s):
        champ = _alias_version(c, model_name, ALIAS)
        champ_fid = champ_compared = None
        rescored = False
        reason = None
        if champ is not None:
            champ_fid = float(champ.tags.get("fid", "nan"))
            champ_protocol = Protocol.from_tags(champ.tags)
            diff = protocol.differences(champ_protocol)
            if not diff:
                champ_compared = champ_fid
            elif rescore is not None:
                again = rescore(champion_generator(model_name, champ))
                champ_compared, rescored = float(again["fid"]), True
                _tag(c, model_name, champ.version, {
                    f"rescored.{protocol.id}.fid": repr(champ_compared),
                    f"rescored.{protocol.id}.fid_std": repr(float(again.get("fid_std", 0.0)))})
            else:
                reason = (f"not comparable: the champion (version {champ.version}) was scored "
                          f"under another protocol ({', '.join(diff)} differ) and cannot be "
                          f"re-scored here")
        if reason is None:
            promote, reason = should_promote(fid, champ_compared, min_improvement)
            if rescored:
                reason += (f" (champion re-scored under this protocol: {champ_compared:.4f}; "
                           f"recorded {champ_fid:.4f} under its own)")
        else:
            promote = False
        if promote:
            _move_champion(c, model_name, mv.version, champ)
        margin = None if champ_compared is None else champ_compared - fid
        decision = Decision(
            promoted=promote, reason=reason, version=str(mv.version), fid=fid,
            fid_std=None if fid_std is None else float(fid_std), protocol=protocol.id,
            min_improvement=min_improvement,
            champion_version_before=None if champ is None else str(champ.version),
            champion_fid_before=champ_fid, champion_fid_compared=champ_compared,
            champion_rescored=rescored, margin=margin)
        _tag(c, model_name, mv.version, {
            "promotion": reason, "decision": "promoted" if promote else "declined",
            "decision.kind": "gate", "decision.margin": None if margin is None else repr(margin),
            "decision.min_improvement": repr(min_improvement),
            "decision.champion_version": decision.champion_version_before,
            "decision.champion_fid": None if champ_compared is None else repr(champ_compared)})
    return decision


def promote(model_name: str, version: str | int, *, reason: str = "",
            lock_timeout_s: float = 300.0) -> Decision:
    """Move ``champion`` to ``version`` by hand (the replaced one becomes previous-champion)."""
    c = tracking.client()
    mv = _check_version(c, model_name, str(version))
    with promotion_lock(model_name, lock_timeout_s):
        before = _alias_version(c, model_name, ALIAS)
        _move_champion(c, model_name, mv.version, before)
        was = "none" if before is None else f"version {before.version}"
        why = f"manual promotion (champion was {was})" + (f": {reason}" if reason else "")
        _tag(c, model_name, mv.version, _manual_tags("promoted", why))
    return _manual_decision(mv, before, why)


def rollback(model_name: str, *, lock_timeout_s: float = 300.0) -> Decision:
    """Give ``champion`` back to ``previous-champion``; the demoted version becomes
    previous-champion, so a second rollback undoes the first."""
    c = tracking.client()
    _check_model(c, model_name)
    with promotion_lock(model_name, lock_timeout_s):
        prev = _alias_version(c, model_name, PREVIOUS)
        if prev is None:
            raise RegistryError(f"model '{model_name}' has no '{PREVIOUS}' alias: nothing to "
                                f"roll back to (use `resgan promote {model_name} VERSION`)")
        before = _alias_version(c, model_name, ALIAS)
        _move_champion(c, model_name, prev.version, before)
        was = "none" if before is None else f"version {before.version}"
        why = f"manual rollback (champion was {was})"
        _tag(c, model_name, prev.version, _manual_tags("promoted", why))
        if before is not None and str(before.version) != str(prev.version):
            _tag(c, model_name, before.version, _manual_tags("rolled back", why))
    return _manual_decision(prev, before, why)


def _manual_tags(decision: str, why: str) -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid
        user = str(os.getuid())
    return {"decision": decision, "decision.kind": "manual", "promotion": why,
            "decision.by": f"{user}@{socket.gethostname()}",
            "decision.at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _manual_decision(mv, before, why: str) -> Decision:
    fid = float(mv.tags.get("fid", "nan"))
    bfid = None if before is None else float(before.tags.get("fid", "nan"))
    return Decision(promoted=True, reason=why, version=str(mv.version), fid=fid,
                    fid_std=None, protocol=mv.tags.get("protocol.id"), min_improvement=0.0,
                    champion_version_before=None if before is None else str(before.version),
                    champion_fid_before=bfid, champion_fid_compared=None,
                    champion_rescored=False, margin=None, kind="manual")


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
