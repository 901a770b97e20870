"""One line describing the machine a measurement ran on (for reports and benchmarks)."""

from __future__ import annotations

import os
import platform


def describe() -> str:
    """e.g. ``2-core x86_64 CPU, 24 GiB RAM, no GPU, Linux, Python 3.11.9, torch 2.14.1``."""
    import torch

    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):  # not available on this platform
        mem = "RAM unknown"
    gpu = (", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
           if torch.cuda.is_available() else "no GPU")
    return (f"{os.cpu_count()}-core {platform.machine()} CPU, {mem}, {gpu}, "
            f"{platform.system()}, Python {platform.python_version()}, torch {torch.__version__}")
