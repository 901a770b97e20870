"""Joining or starting Ray, and the bounded waits for its resources.

``init_ray`` joins the cluster at RAY_ADDRESS (turning Ray's token authentication on when
the cluster asks for it, and naming a refused token in one line), or starts a local Ray on a
free port. Either way every process of the job gets the job's own address in RAY_ADDRESS, so
nothing auto-detects "the" local Ray instance, which fails as soon as two pipelines run on
one machine.

Bounded waits (seconds, environment variables read when the wait starts):

``RESGAN_WORKER_WAIT_S`` (default 600)
    how long a Ray Train run (the train stage, each Tune trial) waits for the CPUs/GPUs of
    its workers; then it fails with ``ResourceWaitError``.
``RESGAN_TRIAL_WAIT_S`` (default 600)
    how long a Tune trial may wait to start (its own 0.01 CPU); see resgan.tuning.
"""

from __future__ import annotations

import os
from pathlib import Path

import ray

from resgan.config import ConfigError
from resgan.errors import ResganError
from resgan.runtime import ray_private


WORKER_WAIT_ENV = "RESGAN_WORKER_WAIT_S"
TRIAL_WAIT_ENV = "RESGAN_TRIAL_WAIT_S"
WORKER_NICENESS_ENV = "RAY_worker_niceness"  # Ray's own setting, read by the raylet
DEFAULT_WAIT_S = 600.0


class ResourceWaitError(ResganError, RuntimeError):
    """A bounded wait for Ray resources ran out. The message is one line: what waited, for
    what, how long, and what the cluster has."""


def wait_bound(var: str) -> float:
    """The bound in seconds set by the environment variable ``var`` (see the module doc)."""
    raw = os.environ.get(var, "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_WAIT_S
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{var}={raw!r}: need a number of seconds > 0")
    return seconds


def cluster_free() -> str:
    """What the cluster has, for a wait error: e.g. "0.02 of 2 CPUs free"."""
    total, free = ray.cluster_resources(), ray.available_resources()
    parts = [f"{free.get(k, 0.0):.3g} of {total[k]:.3g} {k}s free"
             for k in ("CPU", "GPU") if total.get(k)]
    return ", ".join(parts) or "no CPUs"


# The address of the Ray instance this process started (init_ray puts it in RAY_ADDRESS).
_started_address: str | None = None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class ClusterJoinError(ResganError, RuntimeError):
    """The Ray cluster at RAY_ADDRESS could not be joined (refused token, wrong address)."""


def _token_source() -> str | None:
    """Where a Ray auth token is at hand: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH") and Path(os.environ["RAY_AUTH_TOKEN_PATH"]).is_file():
        return f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    if (Path.home() / ".ray" / "auth_token").is_file():
        return "~/.ray/auth_token"
    return None


_TOKEN_HOW = ("give the head's token (`ray get-auth-token` on the head) in RAY_AUTH_TOKEN, in a "
              "file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token")


def _token_auth_for_join(address: str) -> str | None:
    """Turn Ray's token authentication on for a driver that joins ``address`` when the
    cluster asks for it; returns where the token comes from (None: not needed, or
    RAY_AUTH_MODE set by the user).

    Ray 2.60 leaves a joining driver in auth mode "disabled" unless RAY_AUTH_MODE=token is
    set, even with the cluster's token in ~/.ray/auth_token: a head started by `ray start`
    with token auth then refuses it after a minute of retries. Token mode must match the
    cluster's, though: a driver in token mode on a cluster without it cannot be called back
    by the cluster's workers. So the GCS is asked first, without a token (about a second),
    and again with the token, so that a wrong one is named at once."""
    if os.environ.get("RAY_AUTH_MODE"):
        return None
    from ray.exceptions import AuthenticationError

    try:
        ray_private.gcs_accepts(address)
        return None  # the cluster takes drivers without a token
    except AuthenticationError:
        pass
    except Exception:  # unreachable, ...: ray.init below says so
        return None
    source = _token_source()
    if source is None:
        raise ClusterJoinError(f"the Ray cluster at {address} (RAY_ADDRESS) uses token "
                               f"authentication and this driver has no token: {_TOKEN_HOW}")
    os.environ["RAY_AUTH_MODE"] = "token"
    ray_private.refresh_auth_config()
    try:
        ray_private.gcs_accepts(address)
    except AuthenticationError:
        raise ClusterJoinError(f"the Ray cluster at {address} (RAY_ADDRESS) refused the token "
                               f"from {source}: {_TOKEN_HOW}") from None
    except Exception:
        pass
    return source


def init_ray() -> None:
    """Join the cluster at RAY_ADDRESS if set, else start a local Ray; either way every
    process of this Ray job gets the job's own address in RAY_ADDRESS.

    Why: Ray's state API, used by Ray Train's placement-group cleaner (an actor), finds the
    cluster by auto-detection when RAY_ADDRESS is unset; with two local Ray instances on
    one machine (two pipelines) it fails ("multiple active Ray instances"), the placement
    groups of trials that ASHA stopped are never removed, and later trials wait for CPUs.
    """
    global _started_address
    if ray.is_initialized():
        return
    for var in (WORKER_WAIT_ENV, TRIAL_WAIT_ENV):  # a bad value fails before any work
        wait_bound(var)
    opts = dict(log_to_driver=True, configure_logging=True, logging_level="WARNING")
    # Ray Train 2.60 sends a worker's print() both to its stdout and to its own logger,
    # which Ray also forwards: every line came twice. Ray Train passes this variable on to
    # its controller and workers.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    given = os.environ.get("RAY_ADDRESS", "")
    if given and given != _started_address:
        # Join. A cluster started elsewhere does not have our environment: the job's
        # runtime_env gives RAY_ADDRESS to all its processes (Ray merges env_vars into
        # every actor's and task's own runtime_env). "auto" and localhost are resolved
        # here, the way ray.init resolves them, so every node gets a reachable address.
        address = given
        if "://" not in given:
            address = ray_private.bootstrap_address(given)
        os.environ["RAY_ADDRESS"] = address
        _token_auth_for_join(address)
        try:
            ray.init(address=address, runtime_env={"env_vars": {
                "RAY_ADDRESS": address,
                "RAY_TRAIN_ENABLE_PRINT_PATCH": os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"]}}, **opts)
        except (ConnectionError, RuntimeError) as exc:
            raise ClusterJoinError(
                f"could not join the Ray cluster at {address} (RAY_ADDRESS): check the address "
                f"and, with token authentication, the token ({_TOKEN_HOW}) "
                f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:160]})") from None
        return
    # Start a local Ray on a port chosen here, so its address is known before it starts:
    # the raylet, and every worker it spawns, inherit this process's environment.
    # (RAY_GCS_SERVER_PORT is Ray's own setting of a new head's GCS port; address="local"
    # makes ray.init start a new instance whatever RAY_ADDRESS says.)
    port = _free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    os.environ["RAY_ADDRESS"] = address
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    # Ray starts its workers at niceness 15 (RayConfig worker_niceness), below every other
    # process of the machine, Ray's own daemons and the stage's driver included: on a
    # 2-core machine each of their wake-ups takes a core from the training worker first
    # (bench/throughput.py runs both; the difference was within its noise here). Workers
    # of the local Ray run at the niceness of the stage that started them; a cluster's own
    # `ray start` decides for its nodes.
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")
    try:
        ray.init(address="local", **opts)
    except BaseException:
        os.environ.pop("RAY_ADDRESS", None)  # no Ray there: a later call starts one again
        raise
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)
    _started_address = address


def storage_path(path: str) -> str:
    """Ray needs an absolute local path or a URI (s3://, gs://, ...)."""
    return path if "://" in path else str(Path(path).resolve())
