"""resgan: a reproducible, distributed pipeline for residual GANs."""

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)
