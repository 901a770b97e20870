"""Model registry: register every version, move ``champion`` only when it is shown better.

A version is always registered (the record of what was trained), with its evaluate score and
that score's per-seed FIDs. The gate:

- *Fresh seeds, both models.* When a champion exists, the gate scores the champion and the
  candidate again, FID only, under the candidate's scoring protocol on ``eval.repeats``
  sample seeds that the champion has never been scored on (from GATE_SEED_BASE up): a
  champion's lucky draw is not carried into the next comparison (no winner's curse), and a
  champion scored under another protocol is scored under this one. The scores on those
  seeds grow the champion's history, a tag per protocol family (``gate.scores.<family>``).
- *A test with a stated error rate.* The per-seed differences go to a one-sided paired
  t-test (resgan.metrics.significance): the candidate is promoted when p < ``alpha``, so an
  equal model is promoted about ``alpha`` of the time (bench/gate.py measures it, and the
  power). ``min_improvement`` (FID points, default 0) moves the null hypothesis up, for a
  practical minimum on top of the statistics.
- Without a way to re-score (``rescore`` None, a caller outside the pipeline), the stored
  per-seed FIDs of both versions are compared with Welch's t-test, when their protocols
  are the same; otherwise the gate declines.
- The read-decide-move of the aliases runs under a registry-wide promotion lock, so two
  registrations at once never leave the worse model as champion.
- The replaced champion keeps the alias ``previous-champion``; ``promote`` and ``rollback``
  move the aliases by hand, recorded on the versions as manual decisions.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from resgan.errors import ResganError
from resgan import tracking
from resgan.metrics.scoring import Protocol
from resgan.metrics.significance import Comparison, compare
from resgan.training import checkpoint as ckpt_io

ALIAS = "champion"
PREVIOUS = "previous-champion"
STATE_FILE = "generator.pt"  # the state-dict file logged beside the pt2 model
LOCK_SUFFIX = "--promotion-lock"


class RegistryError(ResganError, RuntimeError):
    """An unknown model or version, or a lock that was not freed in time (one line)."""


@dataclass
class Decision:
    promoted: bool
    reason: str
    version: str
    fid: float  # the candidate's evaluate FID (mean over its protocol's seeds)
    fid_std: float | None  # its SD over those seeds
    protocol: str | None  # the candidate's protocol id
    alpha: float
    min_improvement: float
    champion_version_before: str | None
    champion_fid_before: float | None  # as recorded on the champion (its evaluate FID)
    champion_rescored: bool  # both models scored on fresh seeds
    seeds: str | None  # the seeds compared, "first-last"
    comparison: Comparison | None  # the test, both models' means and SDs, p-value, ...
    champion_history: dict[str, float] | None = None  # seeds, mean, SD of its gate scores
    kind: str = "gate"  # gate or manual

    @property
    def margin(self) -> float | None:
        """The champion's FID minus the candidate's on the compared seeds."""
        return None if self.comparison is None else self.comparison.improvement

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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

LOCK_LEASE_S = 60.0  # a lock ticket not renewed for this long (its holder died) is broken
LOCK_SOURCE = "resgan-lock:/promotion"  # the tickets' model-version source (nothing to load)


@contextlib.contextmanager
def promotion_lock(model_name: str, timeout_s: float = 300.0,
                   lease_s: float | None = None) -> Iterator[None]:
    """Hold the registry-wide lock of ``model_name`` while aliases are read and moved.

    A ticket lock in the model registry itself, so it works on the embedded store and on a
    shared ``mlflow server`` alike. The registered model ``<model_name>--promotion-lock``
    holds one model version per registration that wants the lock: the store numbers them
    atomically and never reuses a number, so version numbers are tickets, served in order.
    The lowest live ticket holds the lock; release deletes one's own ticket and nothing else.

    - *Lease*: every ticket is renewed every ``lease_s / 4`` seconds by a thread of its owner
      (the store stamps the renewal with its own clock), while it waits and while it holds, so
      a gate that runs for an hour keeps its lock.
    - *Staleness*: a waiter breaks a lower ticket whose renewal stamp has not changed for
      ``lease_s`` seconds of the waiter's own monotonic clock: no two machines' clocks are
      compared, so a waiter whose clock runs ahead breaks nothing. A SIGKILLed holder is
      broken after ``lease_s`` (60 s), within the default wait. Breaking deletes that one
      ticket number, so two waiters breaking it at once delete the same ticket, and neither
      can delete the lock of whoever got it next.

    Args:
        lease_s: default LOCK_LEASE_S, or the environment's RESGAN_LOCK_LEASE_S.
    Raises:
        RegistryError: the lock was not free within ``timeout_s`` (names its holder).
    """
    import threading
    import uuid

    from mlflow.exceptions import MlflowException

    lease = float(lease_s or os.environ.get("RESGAN_LOCK_LEASE_S") or LOCK_LEASE_S)
    c = tracking.client()
    name = model_name + LOCK_SUFFIX
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(MlflowException):  # RESOURCE_ALREADY_EXISTS: kept for good
        c.create_registered_model(name, description=f"The promotion lock of '{model_name}': "
                                  "one version per registration waiting or holding (resgan)")
    ticket = str(c.create_model_version(name, LOCK_SOURCE, tags={"holder": holder},
                                        description=f"{holder}: waiting").version)
    stop, lost = threading.Event(), threading.Event()

    def renew() -> None:
        rc, n = tracking.client(), 0
        while not stop.wait(lease / 4):
            n += 1
            try:
                rc.update_model_version(name, ticket, description=f"{holder}: alive ({n})")
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # broken: we stalled > lease
                    lost.set()
                    return
            except Exception:  # a network blip: the next renewal tries again
                pass

    renewer = threading.Thread(target=renew, name="promotion-lock-lease", daemon=True)
    renewer.start()
    try:
        _wait_for_turn(c, name, ticket, lease, timeout_s, model_name)
        yield
        if lost.is_set():
            import warnings

            warnings.warn(f"the promotion lock of '{model_name}' was broken while held (this "
                          f"process stalled for over {lease:.0f} s): check the aliases",
                          stacklevel=2)
    finally:
        stop.set()
        renewer.join(timeout=30)
        with contextlib.suppress(MlflowException):
            c.delete_model_version(name, ticket)


def _wait_for_turn(c, name: str, ticket: str, lease: float, timeout_s: float,
                   model_name: str) -> None:
    """Wait until no live ticket below ``ticket`` remains, breaking those not renewed."""
    from mlflow.exceptions import MlflowException

    seen: dict[str, tuple[Any, float]] = {}  # ticket -> (renewal stamp, when it last changed)
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        lower = sorted((mv for mv in c.search_model_versions(f"name='{name}'")
                        if int(mv.version) < int(ticket)), key=lambda mv: int(mv.version))
        if not lower:
            return
        now = time.monotonic()
        for mv in lower:
            stamp = (mv.last_updated_timestamp, mv.description)
            if mv.version not in seen or seen[mv.version][0] != stamp:
                seen[mv.version] = (stamp, now)
            elif now - seen[mv.version][1] > lease:  # its holder stopped renewing: dead
                with contextlib.suppress(MlflowException):  # another waiter broke it first
                    c.delete_model_version(name, mv.version)
        if now > deadline:
            holder = (lower[0].tags or {}).get("holder", "?")
            raise RegistryError(
                f"waited {timeout_s:.0f} s for the promotion lock of model '{model_name}' "
                f"(held by {holder}, ticket {lower[0].version} of registered model '{name}', "
                f"renewed while its registration runs; a dead holder's ticket is broken "
                f"after {lease:.0f} s)")
        time.sleep(delay)
        delay = min(1.0, delay * 1.5)


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
             score: dict[str, Any], commit: str, alpha: float = 0.05,
             min_improvement: float = 0.0,
             rescore: Callable[[torch.nn.Module, range], list[float]] | None = None,
             extra_tags: dict[str, Any] | None = None, lock_timeout_s: float = 300.0) -> Decision:
    """Register a new version from a train run and apply the champion gate.

    Args:
        generator_path: the train stage's generator file.
        run_id: the MLflow run the generator came from.
        model_name: registered model name.
        score: evaluate's score (fid, fid_std, fid_per_seed, protocol: Protocol's fields).
        commit: the git commit recorded on the version.
        alpha: the test's level: an equal model is promoted about this often.
        min_improvement: FID points of improvement under the null hypothesis (0: any).
        rescore: per-seed FIDs of a generator on the given seeds under the candidate's
            protocol; the gate then compares both models on fresh seeds (paired). Without
            it, the stored per-seed scores are compared when the protocols are equal.
        extra_tags: more version tags (the references, DVC experiment, ...).
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
    per_seed = [float(f) for f in score.get("fid_per_seed") or []]
    _tag(c, model_name, mv.version, {
        "fid": repr(fid), "fid_std": None if fid_std is None else repr(float(fid_std)),
        "fid_per_seed": json.dumps(per_seed) if per_seed else None,
        "features": protocol.features, "num_samples": protocol.num_samples,
        "git_commit": commit, **protocol.tags(), **(extra_tags or {})})

    with promotion_lock(model_name, lock_timeout_s):
        champ = _alias_version(c, model_name, ALIAS)
        decision = Decision(
            promoted=False, reason="", version=str(mv.version), fid=fid,
            fid_std=None if fid_std is None else float(fid_std), protocol=protocol.id,
            alpha=alpha, min_improvement=min_improvement,
            champion_version_before=None if champ is None else str(champ.version),
            champion_fid_before=None if champ is None else float(champ.tags.get("fid", "nan")),
            champion_rescored=False, seeds=None, comparison=None)
        if not math.isfinite(fid):
            decision.reason = "the new FID is not finite"
        elif champ is None:
            decision.promoted, decision.reason = True, "no champion yet"
        elif rescore is not None:
            _challenge(c, model_name, champ, mv, protocol, generator_path, rescore, decision)
        else:
            _compare_stored(champ, protocol, per_seed, decision)
        if decision.promoted:
            _move_champion(c, model_name, mv.version, champ)
        _tag(c, model_name, mv.version, _decision_tags(decision))
        # the verdict where the MLflow UI shows it first, on the version's page
        c.update_model_version(model_name, str(mv.version), description=(
            f"{'Promoted to' if decision.promoted else 'Not promoted to'} @{ALIAS} by the gate: "
            f"{decision.reason}"))
    return decision


def _decision_tags(d: Decision) -> dict[str, Any]:
    """The gate's decision as version tags (``decision.*``; the reason as ``promotion``)."""
    tags = {"promotion": d.reason, "decision": "promoted" if d.promoted else "declined",
            "decision.kind": d.kind, "decision.alpha": repr(d.alpha),
            "decision.min_improvement": repr(d.min_improvement),
            "decision.champion_version": d.champion_version_before, "decision.seeds": d.seeds}
    cmp = d.comparison
    if cmp is not None:
        tags.update({"decision.test": cmp.test, "decision.p_value": repr(cmp.p_value),
                     "decision.t": repr(cmp.t), "decision.margin": repr(cmp.improvement),
                     "decision.margin_se": repr(cmp.se),
                     "decision.detectable": repr(cmp.detectable),
                     "decision.champion_fid": repr(cmp.champion_fid),
                     "decision.champion_fid_sd": repr(cmp.champion_sd),
                     "decision.candidate_fid": repr(cmp.candidate_fid),
                     "decision.candidate_fid_sd": repr(cmp.candidate_sd)})
    return tags


GATE_SEED_BASE = 1_000_000_000  # the gate's fresh seeds start here, far from eval.seed's
HISTORY_KEEP = 500  # per-seed gate scores kept on a version, per protocol family


def _history(tags: dict[str, str], family: str) -> dict[int, float]:
    """A version's gate scores under a protocol family: {seed: FID}."""
    try:
        return {int(k): float(v) for k, v in json.loads(tags[f"gate.scores.{family}"]).items()}
    except (KeyError, ValueError, TypeError, AttributeError):
        return {}


def fresh_seeds(used: set[int], repeats: int, avoid: list[range]) -> range:
    """The first ``repeats`` consecutive seeds from GATE_SEED_BASE up, past every seed in
    ``used`` and outside every range in ``avoid``."""
    start = max([GATE_SEED_BASE] + [s + 1 for s in used])
    while True:
        seeds = range(start, start + repeats)
        clash = [r for r in avoid if seeds.start < r.stop and r.start < seeds.stop]
        if not clash:
            return seeds
        start = max(r.stop for r in clash)


def _span(seeds: range) -> str:
    """``first-last`` of consecutive seeds, as decisions record them."""
    return f"{seeds.start}-{seeds.stop - 1}"


def _challenge(c, model_name: str, champ, mv, protocol: Protocol, generator_path,
               rescore: Callable[[torch.nn.Module, range], list[float]],
               decision: Decision) -> None:
    """Both models on fresh seeds, a paired test; the champion's history grows."""
    history = _history(champ.tags, protocol.family)
    champ_protocol = Protocol.from_tags(champ.tags)
    avoid = [protocol.seeds()] + ([champ_protocol.seeds()] if champ_protocol else [])
    seeds = fresh_seeds(set(history), protocol.repeats, avoid)
    champ_scores = list(rescore(champion_generator(model_name, champ), seeds))
    cand_scores = list(rescore(ckpt_io.generator_from(ckpt_io.load(generator_path)), seeds))
    cmp = compare(champ_scores, cand_scores, paired=True, alpha=decision.alpha,
                  min_improvement=decision.min_improvement)
    history.update(zip(seeds, champ_scores))
    kept = dict(sorted(history.items())[-HISTORY_KEEP:])
    key = f"gate.scores.{protocol.family}"
    _tag(c, model_name, champ.version, {key: json.dumps(kept)})
    _tag(c, model_name, mv.version, {key: json.dumps(dict(zip(seeds, cand_scores)))})
    values = list(kept.values())
    decision.champion_history = {"seeds": len(values), "fid": statistics.fmean(values),
                                 "fid_sd": statistics.stdev(values) if len(values) > 1 else 0.0}
    decision.champion_rescored, decision.comparison = True, cmp
    decision.seeds = _span(seeds)
    decision.promoted = cmp.promote
    decision.reason = (f"{cmp.summary()}; both scored on fresh seeds {decision.seeds}; the "
                       f"champion's mean over all {len(values)} seeds it was challenged on: "
                       f"{decision.champion_history['fid']:.4f}")


def _compare_stored(champ, protocol: Protocol, per_seed: list[float],
                    decision: Decision) -> None:
    """Without re-scoring: Welch's t-test on both versions' stored per-seed FIDs."""
    diff = protocol.differences(Protocol.from_tags(champ.tags))
    try:
        champ_scores = [float(f) for f in json.loads(champ.tags["fid_per_seed"])]
    except (KeyError, ValueError, TypeError):
        champ_scores = []
    if diff:
        decision.reason = (f"not comparable: the champion (version {champ.version}) was scored "
                           f"under another protocol ({', '.join(diff)} differ) and cannot be "
                           f"re-scored here")
    elif len(champ_scores) < 2 or len(per_seed) < 2:
        decision.reason = ("not comparable: the gate needs at least 2 per-seed FIDs of each "
                           "model (fid_per_seed) or a way to re-score them")
    else:
        cmp = compare(champ_scores, per_seed, paired=False, alpha=decision.alpha,
                      min_improvement=decision.min_improvement)
        decision.comparison, decision.promoted = cmp, cmp.promote
        decision.seeds = _span(protocol.seeds())
        decision.reason = (f"{cmp.summary()}; on the scores stored with both versions (the "
                           f"champion's are those it was selected on)")


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
                    fid_std=None, protocol=mv.tags.get("protocol.id"), alpha=0.0,
                    min_improvement=0.0,
                    champion_version_before=None if before is None else str(before.version),
                    champion_fid_before=bfid, champion_rescored=False, seeds=None,
                    comparison=None, kind="manual")


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
