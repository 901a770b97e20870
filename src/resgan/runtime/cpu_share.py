"""Share one machine's cores among the resgan trainings running on it at the same time.

A training on CPUs asks for as many torch threads as its Ray worker or trial has CPUs. Torch's
OpenMP threads work in lock-step: when the trainings on a machine ask for more threads than it
has cores (two pipelines at once, `dvc queue start -j 2`: each train stage asks for every
core), every preempted thread stalls its team and all of them crawl (two 2-thread loops on 2
cores: a small fraction of the speed of one alone each, docs/benchmarks.md (h)). Each training therefore
registers its request in a per-user directory of the system's temporary directory and, at
every epoch, takes its share of the cores: its request while the requests fit, else its
proportion of the cores, at least one thread. A run alone keeps its threads (and its
bit-for-bit results); ``RESGAN_CPU_SHARE=off`` turns the sharing off.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

from resgan.console import share_line
from resgan.runtime.processes import alive

ENV = "RESGAN_CPU_SHARE"
_serial = itertools.count()


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class CpuShare:
    """This training's lease on the machine's cores (a context manager; released on exit).

    Args:
        requested: the threads this training asks for.
        root: where the leases of this machine live (default: ``resgan-cpu-<uid>`` in the
            system's temporary directory, shared by every checkout of the project).
        cores: the machine's cores (default: :func:`machine_cores`).
    """

    def __init__(self, requested: int, root: str | Path | None = None, cores: int | None = None,
                 enabled: bool = True):
        self.requested = max(1, int(requested))
        self.cores = cores or machine_cores()
        self.enabled = enabled and os.environ.get(ENV, "on").lower() not in ("off", "0", "false")
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        self.root = Path(root) if root else Path(tempfile.gettempdir()) / f"resgan-cpu-{uid}"
        self.file = self.root / f"{os.getpid()}-{next(_serial)}"
        self._changed = False  # set the threads: only such a lease gives them back on release
        if self.enabled:
            self.root.mkdir(parents=True, exist_ok=True)
            self.file.write_text(str(self.requested))

    def requests(self) -> list[int]:
        """The threads asked for by the live trainings of this machine (this one included);
        leases of processes that are gone are removed."""
        out = []
        for f in self.root.glob("*-*"):
            try:
                pid, n = int(f.name.split("-")[0]), int(f.read_text())
            except (ValueError, OSError):  # being written, or removed meanwhile
                continue
            if alive(pid):
                out.append(n)
            else:
                f.unlink(missing_ok=True)
        return out

    def threads(self) -> int:
        """This training's share now: its request while all requests fit in the cores, else
        its proportion of them (at least one thread)."""
        if not self.enabled:
            return self.requested
        total = sum(self.requests())
        if total <= self.cores:
            return self.requested
        return max(1, self.requested * self.cores // total)

    def apply(self, say: bool = False) -> int:
        """Set torch's threads to this training's share now (``say``: print a line when
        it changes); returns it."""
        import torch

        n = self.threads()
        if n != torch.get_num_threads():
            if say:
                print(share_line(self.cores, n, shared=n < self.requested), flush=True)
            torch.set_num_threads(n)
            self._changed = True
        return n

    def release(self) -> None:
        """Give the lease back (and this process its requested threads)."""
        self.file.unlink(missing_ok=True)
        if self._changed:
            import torch

            torch.set_num_threads(self.requested)
            self._changed = False

    def __enter__(self) -> "CpuShare":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
