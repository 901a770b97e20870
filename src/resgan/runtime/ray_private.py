"""Every private Ray API resgan uses, each behind one function, in one place.

Ray (2.60, the pinned version) has no public API for these needs. Each function says what
it needs and why. ``tests/test_ray_private.py`` imports every name listed in ``PRIVATE``
and fails, naming it, when a Ray upgrade moves or removes one; at run time only the
cosmetic ones (``refresh_auth_config``'s caller re-checks the token itself, and the log
levels) carry on without theirs. Everything else in resgan uses Ray's public API.
"""

from __future__ import annotations

import logging
from typing import Any

# what resgan calls -> the private Ray name behind it
PRIVATE = {
    "gcs_accepts": "ray._raylet.GcsClient",
    "refresh_auth_config": "ray._private.authentication.authentication_token_setup._enable_token_auth",
    "bootstrap_address": "ray._private.services.canonicalize_bootstrap_address_or_die",
    "quiet_train_reports": "ray.train.v2._internal.execution.context",
    "is_worker_startup_timeout": "ray.train.v2._internal.exceptions.WorkerGroupStartupTimeoutError",
}


def gcs_accepts(address: str) -> None:
    """Ask the GCS at ``address`` for its cluster id (about a second): returns when it takes
    this process's credentials, raises ``ray.exceptions.AuthenticationError`` when it wants a
    token this process does not send (or refuses the one it sends), anything else when it
    cannot be reached. (Ray has no public call that tells whether a cluster uses token
    authentication before ``ray.init`` has retried for a minute.)"""
    from ray._raylet import GcsClient

    GcsClient(address=address).cluster_id


def refresh_auth_config() -> None:
    """Make Ray re-read RAY_AUTH_MODE: it caches its authentication config at import, and
    ``ray start`` refreshes it this way after setting the mode."""
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError:  # another Ray: the GCS check after it names a refused token
        return
    _enable_token_auth()


def bootstrap_address(address: str) -> str:
    """``auto``, ``localhost:port`` or a host name resolved to the address ``ray.init`` would
    connect to (so that every node is given a reachable one)."""
    from ray._private.services import canonicalize_bootstrap_address_or_die

    return canonicalize_bootstrap_address_or_die(address)


def quiet_train_reports() -> None:
    """Ray Train logs every ``report`` at INFO from each worker, on loggers named after its
    internal modules (one after its source file's path); the training loop prints one line
    per epoch instead."""
    try:
        from ray.train.v2._internal.execution import context, train_fn_utils
    except ImportError:  # another Ray: its logging stays as it is
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)
    logging.getLogger(train_fn_utils.__name__).setLevel(logging.WARNING)


def is_worker_startup_timeout(failure: Any) -> bool:
    """Whether a ``ray.train.ControllerError``'s ``controller_failure`` is Ray Train giving up
    on placing a worker group (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S): its public error
    types do not tell it from other controller failures."""
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    return isinstance(failure, WorkerGroupStartupTimeoutError)
