"""resgan: a reproducible, distributed pipeline for residual GANs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("resgan")  # pyproject.toml's, as installed
except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"
