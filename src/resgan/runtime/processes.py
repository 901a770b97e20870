"""Whether a process of this host is alive: the one liveness check of the project."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs. A killed one not yet reaped (a zombie)
    does not; another user's live process does."""
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except ImportError:
        pass
    except Exception:  # psutil.NoSuchProcess, AccessDenied: decide by the signal below
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True
